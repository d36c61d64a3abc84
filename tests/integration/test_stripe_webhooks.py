"""POST /api/webhooks/stripe on the real app, real Postgres and Redis, and localstripe as Stripe.

Top-ups are created and paid on localstripe for real; the events are signed here (with the app's
injected clock) and posted to the app, so every ordering, replay and forgery can be chosen. The
handler reads each PaymentIntent and charge back from localstripe, so the event bodies below lie
about amounts on purpose. Every test ends with the ledger audit finding nothing.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.applications import Starlette

from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.stripe_client import StripeClient
from aichat_gateway.billing.topups import CreatedTopup, TopUps
from aichat_gateway.config.logging import configure_logging
from aichat_gateway.config.settings import Settings, load_settings
from aichat_gateway.server.app import create_app
from tests.support.localstripe import CARD_DECLINED, LocalStripe, running_localstripe
from tests.support.ports import free_port
from tests.support.scratch import TEST_REDIS_URL, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix
from tests.support.webhooks import START, WEBHOOK_SECRET, event_body, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

API_KEY = "sk_test_" + uuid.uuid4().hex
GATEWAY_SECRET = "test-secret-key-" + "x" * 32
USD = 1_000_000


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def database_dsn() -> Iterator[str]:
    with migrated_database("stripewh") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def stripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    with running_localstripe(Path(tmp_path_factory.mktemp("localstripe")), API_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("swh") as p:
        yield p


@pytest.fixture
def settings(database_dsn: str, stripe: LocalStripe, prefix: str) -> Settings:
    return load_settings(
        DATABASE_URL=database_dsn,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=GATEWAY_SECRET,
        GATEWAY_REDIS_PREFIX=prefix,
        STRIPE_SECRET_KEY=API_KEY,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_API_BASE=stripe.url,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def logs() -> io.StringIO:
    stream = io.StringIO()
    configure_logging("debug", True, stream=stream)
    return stream


@pytest.fixture
def hot() -> list[tuple[str, int]]:
    """What the hot balance view was told, in order."""
    return []


@pytest.fixture
async def app(settings: Settings, clock: Clock, logs: io.StringIO, hot: list[tuple[str, int]]) -> AsyncIterator[Any]:
    async def on_balance_change(user_id: str, amount_micro: int) -> None:
        hot.append((user_id, amount_micro))

    application = create_app(
        settings,
        configure_logs=False,
        clock=clock,
        adjust=lambda svc: replace(svc, on_balance_change=on_balance_change),
    )
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
        yield c


@pytest.fixture
async def db(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_dsn)
    try:
        yield conn
        assert [str(b) for b in await audit(conn)] == []
    finally:
        await conn.close()


# ---- helpers -------------------------------------------------------------------------------------


async def new_user(db: asyncpg.Connection) -> str:
    email = f"buyer-{uuid.uuid4().hex[:10]}@example.com"
    return str(await db.fetchval("INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", email))


async def new_topup(app: Starlette, settings: Settings, user_id: str, amount_micro: int = 20 * USD) -> CreatedTopup:
    async with StripeClient.open(settings) as stripe_client:
        return await TopUps(app.state.services.db, stripe_client).create(user_id, amount_micro)


async def paid_topup(
    app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection, amount_micro: int = 20 * USD
) -> tuple[str, CreatedTopup]:
    user_id = await new_user(db)
    topup = await new_topup(app, settings, user_id, amount_micro)
    status, _ = await stripe.pay(topup.payment_intent_id)
    assert status == 200
    return user_id, topup


async def send(
    client: httpx.AsyncClient, clock: Clock, event_type: str, obj: dict[str, Any], event_id: str | None = None
) -> httpx.Response:
    body = event_body(event_type, obj, event_id)
    return await client.post("/api/webhooks/stripe", content=body, headers=signed(body, clock()))


def intent_object(topup: CreatedTopup, user_id: str, **lies: Any) -> dict[str, Any]:
    return {
        "id": topup.payment_intent_id,
        "object": "payment_intent",
        "metadata": {"account_id": user_id, "topup_id": topup.id},
        **lies,
    }


async def balance(db: asyncpg.Connection, user_id: str) -> int:
    return await ledger.balance_micro(db, ledger.AccountKind.BUYER, user_id)


async def outcome_of(db: asyncpg.Connection, event_id: str) -> str | None:
    value: str | None = await db.fetchval("SELECT outcome FROM stripe_events WHERE event_id = $1", event_id)
    return value


async def transfers_for(db: asyncpg.Connection, payment_intent_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT idempotency_key FROM transfers WHERE idempotency_key LIKE '%' || $1 || '%' ORDER BY id",
        payment_intent_id,
    )
    return [r["idempotency_key"] for r in rows]


# ---- payment_intent.succeeded ------------------------------------------------------------------


async def test_a_verified_success_credits_what_stripe_received_not_what_the_body_says(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock, hot: list[tuple[str, int]],
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    lie = intent_object(topup, user_id, amount=999_999, amount_received=999_999, status="succeeded")
    response = await send(client, clock, "payment_intent.succeeded", lie, "evt_success_1" + uuid.uuid4().hex[:8])
    assert response.status_code == 200, response.text
    assert response.json() == {"received": True, "outcome": "credited"}
    assert await balance(db, user_id) == 20 * USD
    assert hot == [(user_id, 20 * USD)]
    row = await db.fetchrow("SELECT * FROM topups WHERE id = $1", topup.id)
    assert (row["status"], row["credited_micro"], row["credited_transfer_id"] is not None) == (
        "succeeded",
        20 * USD,
        True,
    )


async def test_a_replayed_event_answers_200_and_credits_nothing_more(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock, hot: list[tuple[str, int]],
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    obj = intent_object(topup, user_id)
    first = await send(client, clock, "payment_intent.succeeded", obj, event_id)
    again = await send(client, clock, "payment_intent.succeeded", obj, event_id)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["outcome"] == "duplicate"
    assert await balance(db, user_id) == 20 * USD
    assert len(hot) == 1
    assert await outcome_of(db, event_id) == "credited"


async def test_a_second_success_event_for_the_same_payment_intent_credits_nothing(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    second = await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    assert second.json()["outcome"] == "already_credited"
    assert await balance(db, user_id) == 20 * USD
    assert await transfers_for(db, topup.payment_intent_id) == [f"topup:{topup.payment_intent_id}"]


async def test_a_success_event_for_an_intent_stripe_has_not_collected_credits_nothing(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection, clock: Clock,
) -> None:  # fmt: skip
    user_id = await new_user(db)
    topup = await new_topup(app, settings, user_id)  # never paid
    response = await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id, status="succeeded"))
    assert response.json()["outcome"] == "no_effect"
    assert await balance(db, user_id) == 0


# ---- verification -------------------------------------------------------------------------------


async def test_a_forged_signature_answers_400_and_records_nothing(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock, hot: list[tuple[str, int]],
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    body = event_body("payment_intent.succeeded", intent_object(topup, user_id), event_id)
    response = await client.post(
        "/api/webhooks/stripe", content=body, headers=signed(body, clock(), secret="not-the-secret")
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "webhook_rejected"
    assert await outcome_of(db, event_id) is None
    assert await balance(db, user_id) == 0 and hot == []


async def test_a_body_changed_after_signing_answers_400(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    body = event_body("payment_intent.succeeded", intent_object(topup, user_id))
    headers = signed(body, clock())
    response = await client.post("/api/webhooks/stripe", content=body.replace(b"event", b"evenT"), headers=headers)
    assert response.status_code == 400
    assert await balance(db, user_id) == 0


async def test_a_stale_timestamp_answers_400_and_records_nothing(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    body = event_body("payment_intent.succeeded", intent_object(topup, user_id), event_id)
    headers = signed(body, clock())
    clock.now += settings.stripe_webhook_tolerance + 1
    response = await client.post("/api/webhooks/stripe", content=body, headers=headers)
    assert response.status_code == 400
    assert "tolerance" in response.json()["error"]["message"]
    assert await outcome_of(db, event_id) is None
    assert await balance(db, user_id) == 0


async def test_a_missing_signature_answers_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/webhooks/stripe", content=event_body("payment_intent.succeeded", {"id": "x"}))
    assert response.status_code == 400


# ---- failures and ordering --------------------------------------------------------------------


async def test_a_declined_payment_marks_the_topup_failed_without_ledger_effect(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock, hot: list[tuple[str, int]],
) -> None:  # fmt: skip
    user_id = await new_user(db)
    topup = await new_topup(app, settings, user_id)
    status, _ = await stripe.pay(topup.payment_intent_id, card=CARD_DECLINED)
    assert status == 402
    response = await send(client, clock, "payment_intent.payment_failed", intent_object(topup, user_id))
    assert response.json()["outcome"] == "failed"
    assert await db.fetchval("SELECT status FROM topups WHERE id = $1", topup.id) == "failed"
    assert await balance(db, user_id) == 0 and hot == []
    assert await transfers_for(db, topup.payment_intent_id) == []


async def test_a_failure_event_after_the_success_leaves_the_credit_in_place(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    late = await send(client, clock, "payment_intent.payment_failed", intent_object(topup, user_id))
    assert late.status_code == 200 and late.json()["outcome"] == "already_credited"
    assert await db.fetchval("SELECT status FROM topups WHERE id = $1", topup.id) == "succeeded"
    assert await balance(db, user_id) == 20 * USD


async def test_a_failure_event_arriving_before_the_success_does_not_stop_the_credit(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    early = await send(client, clock, "payment_intent.payment_failed", intent_object(topup, user_id))
    # Stripe's intent has succeeded by the time the stale failure is handled: the failure syncs it.
    assert early.json()["outcome"] == "credited"
    success = await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    assert success.json()["outcome"] == "already_credited"
    assert await balance(db, user_id) == 20 * USD


# ---- refunds ----------------------------------------------------------------------------------


def charge_object(charge_id: str, topup: CreatedTopup, **lies: Any) -> dict[str, Any]:
    return {"id": charge_id, "object": "charge", "payment_intent": topup.payment_intent_id, **lies}


async def test_a_refund_after_spending_takes_the_buyer_below_zero(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock, hot: list[tuple[str, int]],
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    async with db.transaction():  # the buyer spends 15 USD
        buyer = await ledger.account_id(db, ledger.AccountKind.BUYER, user_id)
        platform = await ledger.account_id(db, ledger.AccountKind.PLATFORM)
        await ledger.post(
            db, idempotency_key=f"usage:{uuid.uuid4()}", kind="usage", legs=[(buyer, -15 * USD), (platform, 15 * USD)]
        )
    charge_id = await stripe.charge_of(topup.payment_intent_id)
    await stripe.refund(charge_id)  # the whole 20 USD
    response = await send(client, clock, "charge.refunded", charge_object(charge_id, topup, amount_refunded=1))
    assert response.json()["outcome"] == "refunded"
    assert await balance(db, user_id) == -15 * USD
    assert hot == [(user_id, 20 * USD), (user_id, -20 * USD)]


async def test_partial_refunds_debit_each_new_amount_once_in_any_order(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    charge_id = await stripe.charge_of(topup.payment_intent_id)
    await stripe.refund(charge_id, 500)
    first = await send(client, clock, "charge.refunded", charge_object(charge_id, topup))
    assert first.json()["outcome"] == "refunded"
    assert await balance(db, user_id) == 15 * USD
    await stripe.refund(charge_id, 300)
    # The second refund's event and a late duplicate of the first: only the new 3 USD moves.
    second = await send(client, clock, "charge.refunded", charge_object(charge_id, topup))
    late = await send(client, clock, "charge.refunded", charge_object(charge_id, topup))
    assert (second.json()["outcome"], late.json()["outcome"]) == ("refunded", "no_effect")
    assert await balance(db, user_id) == 12 * USD
    assert await db.fetchval("SELECT refunded_micro FROM topups WHERE id = $1", topup.id) == 8 * USD


async def test_a_refund_before_the_success_event_credits_then_debits_once(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock, hot: list[tuple[str, int]],
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    charge_id = await stripe.charge_of(topup.payment_intent_id)
    await stripe.refund(charge_id, 500)
    refund = await send(client, clock, "charge.refunded", charge_object(charge_id, topup))
    assert refund.json()["outcome"] == "refunded"
    success = await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    assert success.json()["outcome"] == "already_credited"
    assert await balance(db, user_id) == 15 * USD
    assert hot == [(user_id, 20 * USD), (user_id, -5 * USD)]
    event_outcomes = await db.fetch("SELECT outcome FROM stripe_events WHERE topup_id = $1", topup.id)
    assert sorted(r["outcome"] for r in event_outcomes) == ["already_credited", "credited+refunded"]


# ---- disputes ---------------------------------------------------------------------------------


def dispute_object(dispute_id: str, charge_id: str, topup: CreatedTopup, status: str, cents: int) -> dict[str, Any]:
    return {
        "id": dispute_id,
        "object": "dispute",
        "amount": cents,
        "currency": "usd",
        "charge": charge_id,
        "payment_intent": topup.payment_intent_id,
        "status": status,
    }


async def test_a_dispute_debits_the_buyer_and_winning_it_credits_it_back(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock, hot: list[tuple[str, int]],
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    charge_id = await stripe.charge_of(topup.payment_intent_id)
    dispute_id = f"dp_{uuid.uuid4().hex[:14]}"
    created = await send(
        client, clock, "charge.dispute.created", dispute_object(dispute_id, charge_id, topup, "needs_response", 2000)
    )
    assert created.json()["outcome"] == "disputed"
    assert await balance(db, user_id) == 0
    won = await send(client, clock, "charge.dispute.closed", dispute_object(dispute_id, charge_id, topup, "won", 2000))
    assert won.json()["outcome"] == "dispute_won"
    assert await balance(db, user_id) == 20 * USD
    assert hot == [(user_id, 20 * USD), (user_id, -20 * USD), (user_id, 20 * USD)]
    closed = dispute_object(dispute_id, charge_id, topup, "won", 2000)
    again = await send(client, clock, "charge.dispute.closed", closed)
    assert again.json()["outcome"] == "no_effect"
    assert await balance(db, user_id) == 20 * USD


async def test_a_dispute_closed_as_won_before_its_created_event_moves_no_money(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    charge_id = await stripe.charge_of(topup.payment_intent_id)
    dispute_id = f"dp_{uuid.uuid4().hex[:14]}"
    await send(client, clock, "charge.dispute.closed", dispute_object(dispute_id, charge_id, topup, "won", 2000))
    late = await send(
        client, clock, "charge.dispute.created", dispute_object(dispute_id, charge_id, topup, "needs_response", 2000)
    )
    assert late.json()["outcome"] == "no_effect"
    assert await balance(db, user_id) == 20 * USD


# ---- unknown things -----------------------------------------------------------------------------


async def test_an_event_for_an_unknown_topup_is_recorded_as_ignored_and_logged_as_an_error(
    client: httpx.AsyncClient, db: asyncpg.Connection, clock: Clock, logs: io.StringIO,
) -> None:  # fmt: skip
    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    obj = {"id": "pi_unknown0000000", "object": "payment_intent", "metadata": {"account_id": str(uuid.uuid4())}}
    response = await send(client, clock, "payment_intent.succeeded", obj, event_id)
    assert response.status_code == 200 and response.json()["outcome"] == "ignored_unknown_topup"
    assert await outcome_of(db, event_id) == "ignored_unknown_topup"
    lines = [orjson.loads(line) for line in logs.getvalue().splitlines() if line.startswith("{")]
    assert any(line["event"] == "stripe_event_unknown_topup" and line["level"] == "error" for line in lines)


async def test_an_event_whose_account_differs_from_the_topups_is_ignored(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    # Stripe's own intent says the top-up's account; a body naming another is only a hint and changes nothing,
    # but a row whose user is not the intent's account must never be credited: move the row to someone else.
    other = await new_user(db)
    await db.execute("UPDATE topups SET user_id = $2 WHERE id = $1", topup.id, other)
    response = await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))
    assert response.json()["outcome"] == "ignored_account_mismatch"
    assert await balance(db, user_id) == 0 and await balance(db, other) == 0


async def test_an_unknown_event_type_is_recorded_without_effect(
    client: httpx.AsyncClient, db: asyncpg.Connection, clock: Clock
) -> None:
    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    response = await send(client, clock, "customer.created", {"id": "cus_1", "object": "customer"}, event_id)
    assert response.status_code == 200 and response.json()["outcome"] == "unhandled"
    assert await outcome_of(db, event_id) == "unhandled"


async def test_secrets_never_reach_logs_or_responses(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock, logs: io.StringIO,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    bodies = [
        (await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))).text,
        (await send(client, clock, "payment_intent.succeeded", intent_object(topup, user_id))).text,
    ]
    forged = event_body("payment_intent.succeeded", intent_object(topup, user_id))
    bad = await client.post("/api/webhooks/stripe", content=forged, headers=signed(forged, clock(), "wrong"))
    bodies.append(bad.text)
    clock.now += 10_000
    stale = await client.post("/api/webhooks/stripe", content=forged, headers=signed(forged, START))
    bodies.append(stale.text)
    text = logs.getvalue() + "".join(bodies)
    assert "stripe_webhook_rejected" in text and "credited" in text
    assert WEBHOOK_SECRET not in text and API_KEY not in text


# ---- concurrency and outages --------------------------------------------------------------------


async def test_two_concurrent_deliveries_of_one_event_credit_once(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock, hot: list[tuple[str, int]],
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    obj = intent_object(topup, user_id)
    answers = await asyncio.gather(*(send(client, clock, "payment_intent.succeeded", obj, event_id) for _ in range(4)))
    assert all(a.status_code == 200 for a in answers)
    assert sorted(a.json()["outcome"] for a in answers) == ["credited", "duplicate", "duplicate", "duplicate"]
    assert await balance(db, user_id) == 20 * USD and hot == [(user_id, 20 * USD)]


async def test_concurrent_success_and_failure_events_for_one_intent_credit_once(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    types = ["payment_intent.succeeded", "payment_intent.payment_failed"] * 2
    answers = await asyncio.gather(*(send(client, clock, t, intent_object(topup, user_id)) for t in types))
    assert sorted(a.json()["outcome"] for a in answers) == ["already_credited"] * 3 + ["credited"]
    assert await balance(db, user_id) == 20 * USD
    assert await transfers_for(db, topup.payment_intent_id) == [f"topup:{topup.payment_intent_id}"]


async def test_an_event_that_cannot_reach_stripe_answers_503_records_nothing_and_succeeds_on_retry(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, stripe: LocalStripe, db: asyncpg.Connection,
    clock: Clock,
) -> None:  # fmt: skip
    user_id, topup = await paid_topup(app, settings, stripe, db)
    event_id = f"evt_{uuid.uuid4().hex[:16]}"
    body = event_body("payment_intent.succeeded", intent_object(topup, user_id), event_id)
    broken = create_app(
        settings.model_copy(update={"stripe_api_base": f"http://127.0.0.1:{free_port()}"}),
        configure_logs=False,
        clock=clock,
    )
    async with broken.router.lifespan_context(broken):
        transport = httpx.ASGITransport(app=broken)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as down:
            outage = await down.post("/api/webhooks/stripe", content=body, headers=signed(body, clock()))
    assert outage.status_code == 503 and API_KEY not in outage.text
    assert await outcome_of(db, event_id) is None and await balance(db, user_id) == 0
    retry = await client.post("/api/webhooks/stripe", content=body, headers=signed(body, clock()))
    assert retry.json()["outcome"] == "credited"
    assert await balance(db, user_id) == 20 * USD
