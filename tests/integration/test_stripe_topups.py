"""Top-ups end to end: the gateway under uvicorn on 127.0.0.1, localstripe as Stripe, real Postgres.

A buyer creates a top-up through the API, pays its PaymentIntent on localstripe with a test card,
and localstripe delivers the signed webhook to the gateway by itself (it can reach the gateway
because both listen on loopback). Waiting for that delivery polls the top-up with a deadline:
localstripe sends events about a second after they happen, on its own clock.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn

from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.autorecharge import AutoRecharge
from aichat_gateway.billing.errors import PaymentsUnavailable
from aichat_gateway.billing.stripe_client import StripeClient
from aichat_gateway.billing.topups import TopUps
from aichat_gateway.billing.webhooks import sign
from aichat_gateway.config.logging import configure_logging
from aichat_gateway.config.settings import Settings, load_settings
from aichat_gateway.server.app import create_app
from tests.support.localstripe import CARD_DECLINED, CARD_OK, LocalStripe, running_localstripe
from tests.support.ports import free_port
from tests.support.scratch import TEST_REDIS_URL, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

API_KEY = "sk_test_" + uuid.uuid4().hex
WEBHOOK_SECRET = "webhook-signing-" + uuid.uuid4().hex  # not secret-shaped: the redactor cannot hide a leak
GATEWAY_SECRET = "test-secret-key-" + "x" * 32
PASSWORD = "correct horse battery"
USD = 1_000_000
WEBHOOK_WAIT = 20.0


@dataclass
class Gateway:
    url: str
    settings: Settings
    logs: io.StringIO
    hot: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture(scope="module")
def database_dsn() -> Iterator[str]:
    with migrated_database("stripetop") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def stripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    with running_localstripe(Path(tmp_path_factory.mktemp("localstripe")), API_KEY) as server:
        yield server


def gateway_settings(dsn: str, prefix: str, stripe_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "DATABASE_URL": dsn,
        "REDIS_URL": TEST_REDIS_URL,
        "GATEWAY_SECRET_KEY": GATEWAY_SECRET,
        "GATEWAY_REDIS_PREFIX": prefix,
        "STRIPE_SECRET_KEY": API_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": stripe_url,
    }
    return load_settings(**(values | overrides))


@pytest.fixture(scope="module")
def gateway(database_dsn: str, stripe: LocalStripe) -> Iterator[Gateway]:
    """The real app under uvicorn in a thread, registered as localstripe's webhook endpoint."""
    with scratch_redis_prefix("stop") as prefix:
        settings = gateway_settings(database_dsn, prefix, stripe.url)
        logs = io.StringIO()
        configure_logging("debug", True, stream=logs)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        gw = Gateway(url, settings, logs)

        async def on_balance_change(user_id: str, amount_micro: int) -> None:
            gw.hot.append((user_id, amount_micro))

        app = create_app(
            settings, configure_logs=False, adjust=lambda svc: replace(svc, on_balance_change=on_balance_change)
        )
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.02)
        stripe.register_webhook("gateway", url + "/api/webhooks/stripe", WEBHOOK_SECRET)
        try:
            yield gw
        finally:
            server.should_exit = True
            thread.join(timeout=15)
            sock.close()


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15) as client:
        yield client


@pytest.fixture
async def db(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_dsn)
    try:
        yield conn
        assert [str(b) for b in await audit(conn)] == []
    finally:
        await conn.close()


async def buyer(http: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A new registered buyer: (user id, bearer headers)."""
    email = f"buyer-{uuid.uuid4().hex[:10]}@example.com"
    registered = await http.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = await http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    http.cookies.clear()
    return registered.json()["id"], {"Authorization": f"Bearer {login.json()['access_token']}"}


async def create_topup(http: httpx.AsyncClient, auth: dict[str, str], amount: str = "20.00") -> dict[str, Any]:
    response = await http.post("/api/billing/topups", json={"amount_usd": amount}, headers=auth)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def settled(http: httpx.AsyncClient, auth: dict[str, str], topup_id: str) -> dict[str, Any]:
    """The top-up once a webhook has moved it off 'pending' (localstripe delivers ~1 s later)."""
    deadline = time.monotonic() + WEBHOOK_WAIT
    while True:
        body: dict[str, Any] = (await http.get(f"/api/billing/topups/{topup_id}", headers=auth)).json()
        if body["status"] not in ("creating", "pending"):
            return body
        assert time.monotonic() < deadline, f"no webhook settled top-up {topup_id}: {body}"
        await asyncio.sleep(0.05)


async def balance(db: asyncpg.Connection, user_id: str) -> int:
    return await ledger.balance_micro(db, ledger.AccountKind.BUYER, user_id)


# ---- the whole flow ---------------------------------------------------------------------------


async def test_a_topup_paid_on_stripe_credits_the_buyer_exactly_once(
    http: httpx.AsyncClient, gateway: Gateway, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    created = await create_topup(http, auth, "20.00")
    assert set(created) == {"id", "payment_intent_id", "client_secret", "amount_usd", "status"}
    assert (created["amount_usd"], created["status"]) == ("20.000000", "pending")
    assert created["client_secret"].startswith(created["payment_intent_id"])

    status, _ = await stripe.pay(created["payment_intent_id"])
    assert status == 200
    topup = await settled(http, auth, created["id"])

    assert (topup["status"], topup["credited_usd"]) == ("succeeded", "20.000000")
    assert await balance(db, user_id) == 20 * USD
    assert [h for h in gateway.hot if h[0] == user_id] == [(user_id, 20 * USD)]
    events = await db.fetch("SELECT type, outcome FROM stripe_events WHERE topup_id = $1", uuid.UUID(created["id"]))
    assert [(e["type"], e["outcome"]) for e in events] == [("payment_intent.succeeded", "credited")]


async def test_the_payment_intent_carries_the_account_the_topup_and_cents_in_usd(
    http: httpx.AsyncClient, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    created = await create_topup(http, auth, "12.34")
    intent = await stripe.payment_intent(created["payment_intent_id"])
    assert (intent["amount"], intent["currency"]) == (1234, "usd")
    assert intent["metadata"] == {"account_id": user_id, "topup_id": created["id"]}
    customer = await db.fetchval("SELECT customer_id FROM stripe_customers WHERE user_id = $1", uuid.UUID(user_id))
    assert intent["customer"] == customer


async def test_a_second_topup_reuses_the_buyers_stripe_customer(
    http: httpx.AsyncClient, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    first = await stripe.payment_intent((await create_topup(http, auth))["payment_intent_id"])
    second = await stripe.payment_intent((await create_topup(http, auth))["payment_intent_id"])
    assert first["customer"] == second["customer"] is not None
    assert await db.fetchval("SELECT count(*) FROM stripe_customers WHERE user_id = $1", uuid.UUID(user_id)) == 1


async def test_a_redelivered_event_from_stripe_credits_nothing_more(
    http: httpx.AsyncClient, gateway: Gateway, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    created = await create_topup(http, auth)
    await stripe.pay(created["payment_intent_id"])
    await settled(http, auth, created["id"])
    # Stripe's own event, as localstripe stored it, signed again now: a redelivery.
    _, events = await stripe.call("GET", "/v1/events?type=payment_intent.succeeded&limit=100")
    [event] = [e for e in events["data"] if e["data"]["object"]["id"] == created["payment_intent_id"]]
    body = httpx.Request("POST", "/", json=event).content
    now = int(time.time())
    headers = {"Stripe-Signature": f"t={now},v1={sign(body, WEBHOOK_SECRET, now)}"}
    again = await http.post("/api/webhooks/stripe", content=body, headers=headers)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    assert await balance(db, user_id) == 20 * USD
    assert [h for h in gateway.hot if h[0] == user_id] == [(user_id, 20 * USD)]


async def test_a_declined_card_leaves_the_topup_failed_and_the_balance_untouched(
    http: httpx.AsyncClient, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    created = await create_topup(http, auth)
    status, _ = await stripe.pay(created["payment_intent_id"], card=CARD_DECLINED)
    assert status == 402
    topup = await settled(http, auth, created["id"])
    assert (topup["status"], topup["credited_usd"]) == ("failed", "0.000000")
    assert await balance(db, user_id) == 0


async def test_a_forged_webhook_to_the_live_gateway_answers_400(http: httpx.AsyncClient, gateway: Gateway) -> None:
    body = b'{"id":"evt_forged","type":"payment_intent.succeeded","data":{"object":{"id":"pi_x"}}}'
    now = int(time.time())
    headers = {"Stripe-Signature": f"t={now},v1={sign(body, 'guessed-secret', now)}"}
    response = await http.post("/api/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 400
    assert WEBHOOK_SECRET not in gateway.logs.getvalue() and API_KEY not in gateway.logs.getvalue()


# ---- the create endpoint ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"amount_usd": "4.99"}, "between"),
        ({"amount_usd": "10000.01"}, "between"),
        ({"amount_usd": "20.001"}, "whole cents"),
        ({"amount_usd": 20}, "decimal string"),
        ({"amount_usd": "-20.00"}, "between"),
        ({"amount_usd": "1e3"}, "not a decimal"),
        ({}, "amount_usd is required"),
        (["20.00"], "JSON object"),
    ],
)
async def test_a_bad_amount_answers_400_naming_the_problem(
    http: httpx.AsyncClient, body: object, why: str, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    response = await http.post("/api/billing/topups", json=body, headers=auth)
    assert response.status_code == 400, response.text
    assert why in response.json()["error"]["message"]
    assert await db.fetchval("SELECT count(*) FROM topups WHERE user_id = $1", uuid.UUID(user_id)) == 0


async def test_the_limits_themselves_are_accepted(http: httpx.AsyncClient) -> None:
    _, auth = await buyer(http)
    assert (await create_topup(http, auth, "5.00"))["amount_usd"] == "5.000000"
    assert (await create_topup(http, auth, "10000"))["amount_usd"] == "10000.000000"


async def test_a_topup_without_a_session_answers_401(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/billing/topups", json={"amount_usd": "20.00"})
    assert response.status_code == 401


async def test_a_buyer_cannot_see_another_buyers_topup(http: httpx.AsyncClient) -> None:
    _, alice = await buyer(http)
    _, bob = await buyer(http)
    created = await create_topup(http, alice)
    assert (await http.get(f"/api/billing/topups/{created['id']}", headers=bob)).status_code == 404
    assert (await http.get("/api/billing/topups/not-a-uuid", headers=bob)).status_code == 404


async def test_stripe_unreachable_answers_503_and_leaves_the_topup_failed(
    gateway: Gateway, database_dsn: str, http: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    settings = gateway_settings(
        database_dsn, gateway.settings.redis_prefix, f"http://127.0.0.1:{free_port()}"
    )  # nothing listens there
    app = create_app(settings, configure_logs=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            response = await client.post("/api/billing/topups", json={"amount_usd": "20.00"}, headers=auth)
    assert response.status_code == 503
    assert API_KEY not in response.text
    statuses = await db.fetch("SELECT status FROM topups WHERE user_id = $1", uuid.UUID(user_id))
    assert [r["status"] for r in statuses] == ["failed"]


async def test_without_stripe_keys_both_endpoints_answer_503(
    gateway: Gateway, database_dsn: str, http: httpx.AsyncClient
) -> None:
    _, auth = await buyer(http)
    settings = load_settings(
        DATABASE_URL=database_dsn,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=GATEWAY_SECRET,
        GATEWAY_REDIS_PREFIX=gateway.settings.redis_prefix,
    )
    app = create_app(settings, configure_logs=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            topup = await client.post("/api/billing/topups", json={"amount_usd": "20.00"}, headers=auth)
            hook = await client.post("/api/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=a"})
    assert (topup.status_code, hook.status_code) == (503, 503)


# ---- the client's idempotency -----------------------------------------------------------------


async def test_a_retried_create_sends_the_same_idempotency_key_derived_from_the_topup_id(
    gateway: Gateway, database_dsn: str, db: asyncpg.Connection
) -> None:
    """localstripe ignores Idempotency-Key, so this one looks at the requests themselves."""
    user_id = str(
        await db.fetchval(
            "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", f"{uuid.uuid4().hex}@x.io"
        )
    )
    seen: list[httpx.Request] = []
    fixed_id = uuid.uuid4()

    def stripe_double(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/payment_intents" and sum(r.url.path == request.url.path for r in seen) == 1:
            raise httpx.ConnectError("connection reset", request=request)
        if request.url.path == "/v1/customers":
            return httpx.Response(200, json={"id": "cus_double"})
        return httpx.Response(
            200,
            json={
                "id": "pi_double",
                "status": "requires_payment_method",
                "amount": 2000,
                "currency": "usd",
                "client_secret": "pi_double_secret_x",
                "metadata": {"account_id": user_id, "topup_id": str(fixed_id)},
            },
        )

    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2)
    try:
        async with StripeClient.open(gateway.settings, transport=httpx.MockTransport(stripe_double)) as client:
            created = await TopUps(pool, client, new_id=lambda: fixed_id).create(user_id, 20 * USD)
    finally:
        await pool.close()

    intents = [r for r in seen if r.url.path == "/v1/payment_intents"]
    assert len(intents) == 2
    assert {r.headers["idempotency-key"] for r in intents} == {f"topup-{fixed_id}"}
    assert all(r.headers["authorization"] == f"Bearer {API_KEY}" for r in seen)
    form = dict(httpx.QueryParams(intents[0].content.decode()))
    assert form == {
        "amount": "2000",
        "currency": "usd",
        "customer": "cus_double",
        "metadata[account_id]": user_id,
        "metadata[topup_id]": str(fixed_id),
    }
    assert (created.id, created.payment_intent_id) == (str(fixed_id), "pi_double")


async def test_a_stripe_error_message_never_carries_the_secret_key(gateway: Gateway) -> None:
    def echoing_stripe(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": {"message": f"Invalid API Key provided: {API_KEY}"}})

    async with StripeClient.open(gateway.settings, transport=httpx.MockTransport(echoing_stripe)) as client:
        with pytest.raises(PaymentsUnavailable) as caught:
            await client.retrieve_payment_intent("pi_123")
    assert API_KEY not in caught.value.message and "401" in caught.value.message


# ---- paying with a card the browser set up (billing/cardpay.py) -------------------------------


async def set_up_card(http: httpx.AsyncClient, auth: dict[str, str], stripe: LocalStripe, card: str) -> str:
    """A SetupIntent of ours, confirmed on localstripe with a card as Stripe.js's confirmCardSetup does."""
    created = await http.post("/api/billing/setup_intents", headers=auth)
    assert created.status_code == 201, created.text
    setup_id = created.json()["id"]
    status, body = await stripe.call(
        "POST",
        f"/v1/setup_intents/{setup_id}/confirm",
        {
            "client_secret": created.json()["client_secret"],
            "payment_method_data[type]": "card",
            "payment_method_data[card][number]": card,
            "payment_method_data[card][exp_month]": "12",
            "payment_method_data[card][exp_year]": "2040",
            "payment_method_data[card][cvc]": "123",
        },
    )
    assert (status, body["status"]) == (200, "succeeded"), body
    return str(setup_id)


async def test_a_topup_paid_with_a_set_up_card_is_credited_by_the_webhook_and_audited(
    http: httpx.AsyncClient, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    created = await create_topup(http, auth, "10.00")
    setup_id = await set_up_card(http, auth, stripe, CARD_OK)
    paid = await http.post(f"/api/billing/topups/{created['id']}/pay", json={"setup_intent_id": setup_id}, headers=auth)
    assert paid.status_code == 200, paid.text
    assert paid.json() == {"id": created["id"], "status": "succeeded", "requires_action": False}
    topup = await settled(http, auth, created["id"])
    assert (topup["status"], await balance(db, user_id)) == ("succeeded", 10 * USD)
    events = await db.fetch(
        "SELECT action, target_id, detail FROM account_events WHERE subject_id = $1 AND action LIKE 'topup.%'",
        uuid.UUID(user_id),
    )
    assert [(e["action"], e["target_id"]) for e in events] == [("topup.succeeded", created["id"])]
    detail = events[0]["detail"]
    while isinstance(detail, str):  # audittrail.record's JSON text goes through the pool's jsonb codec once more
        detail = json.loads(detail)
    assert detail["amount_usd"] == "10.000000"


async def test_a_declined_card_is_refused_with_stripes_words_and_credits_nothing(
    http: httpx.AsyncClient, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    created = await create_topup(http, auth, "10.00")
    setup_id = await set_up_card(http, auth, stripe, CARD_DECLINED)
    paid = await http.post(f"/api/billing/topups/{created['id']}/pay", json={"setup_intent_id": setup_id}, headers=auth)
    assert paid.status_code == 400, paid.text
    error = paid.json()["error"]
    assert (error["code"], error["param"]) == ("card_declined", "card")
    assert "declined" in error["message"]
    assert (await settled(http, auth, created["id"]))["status"] == "failed"
    assert await balance(db, user_id) == 0


async def test_another_buyers_set_up_card_cannot_pay_a_topup(
    http: httpx.AsyncClient, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    _, auth = await buyer(http)
    _, other_auth = await buyer(http)
    created = await create_topup(http, auth, "10.00")
    others_card = await set_up_card(http, other_auth, stripe, CARD_OK)
    paid = await http.post(
        f"/api/billing/topups/{created['id']}/pay", json={"setup_intent_id": others_card}, headers=auth
    )
    assert paid.status_code == 400 and paid.json()["error"]["param"] == "setup_intent_id"
    assert (await stripe.payment_intent(created["payment_intent_id"]))["status"] == "requires_payment_method"


async def test_paying_another_buyers_topup_answers_404(http: httpx.AsyncClient, stripe: LocalStripe) -> None:
    _, auth = await buyer(http)
    _, other_auth = await buyer(http)
    created = await create_topup(http, auth, "10.00")
    card = await set_up_card(http, other_auth, stripe, CARD_OK)
    paid = await http.post(
        f"/api/billing/topups/{created['id']}/pay", json={"setup_intent_id": card}, headers=other_auth
    )
    assert paid.status_code == 404


# ---- saved cards (billing/savedcards.py) -------------------------------------------------------


async def save_card(http: httpx.AsyncClient, auth: dict[str, str], stripe: LocalStripe, card: str = CARD_OK) -> str:
    setup_id = await set_up_card(http, auth, stripe, card)
    saved = await http.post("/api/billing/cards", json={"setup_intent_id": setup_id}, headers=auth)
    assert saved.status_code == 201, saved.text
    return str(saved.json()["id"])


async def test_the_first_saved_card_is_listed_as_the_default(http: httpx.AsyncClient, stripe: LocalStripe) -> None:
    _, auth = await buyer(http)
    assert (await http.get("/api/billing/cards", headers=auth)).json() == {"data": []}
    card = await save_card(http, auth, stripe)
    listed = (await http.get("/api/billing/cards", headers=auth)).json()["data"]
    assert [(c["id"], c["last4"], c["default"]) for c in listed] == [(card, "4242", True)]


async def test_making_another_card_the_default_moves_the_mark(http: httpx.AsyncClient, stripe: LocalStripe) -> None:
    _, auth = await buyer(http)
    first = await save_card(http, auth, stripe)
    second = await save_card(http, auth, stripe)
    assert (await http.post(f"/api/billing/cards/{second}/default", headers=auth)).status_code == 200
    listed = (await http.get("/api/billing/cards", headers=auth)).json()["data"]
    assert {c["id"]: c["default"] for c in listed} == {first: False, second: True}


async def test_a_removed_card_is_no_longer_listed(http: httpx.AsyncClient, stripe: LocalStripe) -> None:
    _, auth = await buyer(http)
    card = await save_card(http, auth, stripe)
    assert (await http.delete(f"/api/billing/cards/{card}", headers=auth)).status_code == 204
    assert (await http.get("/api/billing/cards", headers=auth)).json() == {"data": []}


async def test_another_buyers_card_can_be_neither_removed_nor_used(
    http: httpx.AsyncClient, stripe: LocalStripe
) -> None:
    _, auth = await buyer(http)
    _, other_auth = await buyer(http)
    card = await save_card(http, other_auth, stripe)
    assert (await http.delete(f"/api/billing/cards/{card}", headers=auth)).status_code == 404
    created = await create_topup(http, auth, "10.00")
    paid = await http.post(f"/api/billing/topups/{created['id']}/pay", json={"payment_method_id": card}, headers=auth)
    assert paid.status_code == 404
    assert len((await http.get("/api/billing/cards", headers=other_auth)).json()["data"]) == 1


async def test_a_saved_card_pays_a_topup_that_the_webhook_credits(
    http: httpx.AsyncClient, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    card = await save_card(http, auth, stripe)
    created = await create_topup(http, auth, "10.00")
    paid = await http.post(f"/api/billing/topups/{created['id']}/pay", json={"payment_method_id": card}, headers=auth)
    assert paid.status_code == 200, paid.text
    assert (await settled(http, auth, created["id"]))["status"] == "succeeded"
    assert await balance(db, user_id) == 10 * USD


async def test_paying_with_both_a_setup_and_a_saved_card_is_refused(http: httpx.AsyncClient) -> None:
    _, auth = await buyer(http)
    created = await create_topup(http, auth, "10.00")
    body = {"setup_intent_id": "seti_1", "payment_method_id": "pm_1"}
    paid = await http.post(f"/api/billing/topups/{created['id']}/pay", json=body, headers=auth)
    assert paid.status_code == 400


# ---- auto-recharge (billing/autorecharge.py) ---------------------------------------------------


async def auto_recharge_once(gateway: Gateway, database_dsn: str) -> int:
    """One run of the per-minute job, as the worker runs it."""
    pool = await asyncpg.create_pool(database_dsn, min_size=1, max_size=2)
    try:
        async with StripeClient.open(gateway.settings) as client:
            return await AutoRecharge(pool, client).run_once()
    finally:
        await pool.close()


async def test_auto_recharge_is_off_until_turned_on(http: httpx.AsyncClient) -> None:
    _, auth = await buyer(http)
    shown = (await http.get("/api/billing/auto_recharge", headers=auth)).json()
    assert shown == {"enabled": False, "threshold_usd": None, "amount_usd": None, "disabled_reason": None}


async def test_an_auto_recharge_amount_below_the_top_up_minimum_is_refused_naming_amount_usd(
    http: httpx.AsyncClient,
) -> None:
    _, auth = await buyer(http)
    body = {"enabled": True, "threshold_usd": "5.00", "amount_usd": "1.00"}
    answer = await http.put("/api/billing/auto_recharge", json=body, headers=auth)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "amount_usd"
    assert (await http.get("/api/billing/auto_recharge", headers=auth)).json()["enabled"] is False


async def test_a_balance_below_the_threshold_is_topped_up_once_from_the_default_card(
    http: httpx.AsyncClient, gateway: Gateway, database_dsn: str, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    await save_card(http, auth, stripe)
    body = {"enabled": True, "threshold_usd": "5.00", "amount_usd": "10.00"}
    assert (await http.put("/api/billing/auto_recharge", json=body, headers=auth)).status_code == 200
    assert await auto_recharge_once(gateway, database_dsn) >= 1
    await auto_recharge_once(gateway, database_dsn)  # the top-up is on its way: no second charge
    [topup] = await db.fetch("SELECT id FROM topups WHERE user_id = $1 AND auto", uuid.UUID(user_id))
    assert (await settled(http, auth, str(topup["id"])))["status"] == "succeeded"
    assert await balance(db, user_id) == 10 * USD


async def test_a_refused_automatic_charge_turns_auto_recharge_off_and_says_why(
    http: httpx.AsyncClient, gateway: Gateway, database_dsn: str, stripe: LocalStripe, db: asyncpg.Connection
) -> None:
    user_id, auth = await buyer(http)
    await save_card(http, auth, stripe, CARD_DECLINED)
    body = {"enabled": True, "threshold_usd": "5.00", "amount_usd": "10.00"}
    assert (await http.put("/api/billing/auto_recharge", json=body, headers=auth)).status_code == 200
    await auto_recharge_once(gateway, database_dsn)
    shown = (await http.get("/api/billing/auto_recharge", headers=auth)).json()
    assert shown["enabled"] is False and "declined" in shown["disabled_reason"]
    assert await balance(db, user_id) == 0
