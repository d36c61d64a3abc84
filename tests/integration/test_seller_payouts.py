"""Seller earnings and payouts on the real app and a real Postgres: the REST API in process
(httpx ASGITransport), the payout service on the app's own pool.

Earnings are made the way the settlement worker makes them: a buyer is credited, then one usage
transfer per request (buyer -cost, seller +share, platform +fee) and its usage_records row. Unless
a test says when, they were earned long enough ago to be past the holding period. The app's clock
is a `Clock` the tests move (the holding period is days long).

localstripe (tests/support/localstripe.py) has no /v1/transfers (nor Connect accounts), so the Stripe side of
a payout is an httpx MockTransport that records each request and answers as Stripe would; everything
on our side of the HTTP call (StripeClient, Postgres, the ledger) is real. The ledger audit runs
after every test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import httpx
import orjson
import pytest
from starlette.applications import Starlette

from aichat_gateway.accounts.users import create_admin
from aichat_gateway.billing import jobs as payout_jobs
from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.errors import Conflict, PaymentsUnavailable
from aichat_gateway.billing.payouts import Payouts
from aichat_gateway.billing.stripe_client import StripeClient
from aichat_gateway.config.settings import Settings, load_settings
from aichat_gateway.jobs.queue import enqueue
from aichat_gateway.jobs.registry import Job, JobRegistry
from aichat_gateway.queryparams import encode_cursor
from aichat_gateway.server.app import create_app
from tests.support.earnings import HOLD, NOW, earn
from tests.support.jobkit import eventually, running_worker
from tests.support.scratch import TEST_REDIS_URL, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

USD = 1_000_000
PASSWORD = "correct horse battery"
ACCOUNT = "acct_1032D82eZvKYlo2C"


class Clock:
    """The app's wall clock (seconds), moved by the tests."""

    def __init__(self, at: datetime = NOW) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database_dsn() -> Iterator[str]:
    with migrated_database("payouts") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("pay") as value:
        yield value


@pytest.fixture
def settings(database_dsn: str, prefix: str) -> Settings:
    return load_settings(
        DATABASE_URL=database_dsn,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY="test-secret-key-" + "x" * 32,
        GATEWAY_REDIS_PREFIX=prefix,
        GATEWAY_SETTLE_IN_SERVE=False,
        GATEWAY_WORKER_IN_SERVE=False,  # the payout-run job tests run their own worker
        STRIPE_SECRET_KEY="sk_test_" + uuid.uuid4().hex,
        STRIPE_API_BASE="https://stripe.test",
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def app(settings: Settings, clock: Clock) -> AsyncIterator[Starlette]:
    application = create_app(settings, configure_logs=False, clock=clock)
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


@dataclass
class FakeStripe:
    """Stripe's /v1/transfers as an httpx transport: `answer` decides each reply; every request is kept."""

    settings: Settings
    answer: Callable[[httpx.Request], Awaitable[httpx.Response]]
    requests: list[httpx.Request] = field(default_factory=list)

    def opener(self) -> Any:
        async def handle(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return await self.answer(request)

        return StripeClient.open(self.settings, transport=httpx.MockTransport(handle))

    def form(self, index: int = -1) -> dict[str, str]:
        return dict(parse_qsl(self.requests[index].content.decode()))


async def transfer_made(request: httpx.Request) -> httpx.Response:
    form = dict(parse_qsl(request.content.decode()))
    body = {
        "id": "tr_" + form["metadata[payout_id]"].replace("-", ""),
        "object": "transfer",
        "amount": int(form["amount"]),
        "currency": form["currency"],
        "destination": form["destination"],
    }
    return httpx.Response(200, content=orjson.dumps(body))


async def transfer_refused(request: httpx.Request) -> httpx.Response:
    error = {"error": {"type": "invalid_request_error", "message": "No such destination: 'acct_1032D82eZvKYlo2C'"}}
    return httpx.Response(400, content=orjson.dumps(error))


async def stripe_down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def sent_for(stripe: FakeStripe, seller_id: str) -> int:
    """Transfers asked of Stripe for this seller (other tests' sellers share the database)."""
    return sum(stripe.form(i)["metadata[seller_id]"] == seller_id for i in range(len(stripe.requests)))


def payouts_of(app: Starlette, stripe: FakeStripe | None) -> Payouts:
    """The payout service as the app builds it, with Stripe replaced by `stripe` (None: not configured)."""
    settings: Settings = app.state.settings
    return Payouts(
        app.state.services.db,
        min_micro=10 * USD,
        stripe=stripe.opener if stripe else None,
        hold_days=settings.earnings_hold_days,
        approval_micro=int(settings.payout_approval_usd * USD),
        clock=app.state.services.clock,
    )


# ---- helpers ------------------------------------------------------------------------------------


async def user(client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A registered user (any user can sell): (id, bearer headers)."""
    email = f"seller-{uuid.uuid4().hex[:10]}@example.com"
    registered = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    return registered.json()["id"], await login(client, email)


async def login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    response = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    client.cookies.clear()  # bearer only
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def admin(client: httpx.AsyncClient, db: asyncpg.Connection) -> dict[str, str]:
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    await create_admin(db, email, PASSWORD)
    return await login(client, email)


async def admin_account(client: httpx.AsyncClient, db: asyncpg.Connection) -> tuple[str, dict[str, str]]:
    """An admin: (id, bearer headers)."""
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    created = await create_admin(db, email, PASSWORD)
    return created.id, await login(client, email)


async def admin_id(db: asyncpg.Connection) -> str:
    return (await create_admin(db, f"admin-{uuid.uuid4().hex[:10]}@example.com", PASSWORD)).id


async def listing(db: asyncpg.Connection, seller_id: str, name: str) -> tuple[str, str]:
    """A listing row (the marketplace's fields filled with stand-ins): (id, public id)."""
    public_id = "lst_" + uuid.uuid4().hex[:10]
    listing_id = await db.fetchval(
        """INSERT INTO listings (public_id, seller_id, name, provider, base_url, key_ciphertext, key_last4,
                                 key_fingerprint, price_multiplier, attested_at)
           VALUES ($1, $2, $3, 'openai', 'https://api.openai.com/v1', 'k1:stand-in', 'abcd', $4, 1, now())
           RETURNING id""",
        public_id,
        uuid.UUID(seller_id),
        name,
        uuid.uuid4().bytes,
    )
    return str(listing_id), public_id


async def available(db: asyncpg.Connection, seller_id: str) -> int:
    return await ledger.balance_micro(db, ledger.AccountKind.SELLER, seller_id)


async def request_payout(
    client: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any] | None = None
) -> httpx.Response:
    return await client.post("/api/seller/payouts", json=body if body is not None else {}, headers=auth)


async def connect(client: httpx.AsyncClient, auth: dict[str, str], account: str = ACCOUNT) -> None:
    response = await client.put("/api/seller/payout-account", json={"stripe_account_id": account}, headers=auth)
    assert response.status_code == 200, response.text


async def transfers_of(db: asyncpg.Connection, payout_id: str) -> list[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT idempotency_key, kind FROM transfers WHERE memo->>'payout_id' = $1 ORDER BY id", payout_id
    )
    return [(r["idempotency_key"], r["kind"]) for r in rows]


def error_code(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return str(response.json()["error"]["code"])


# ---- earnings -----------------------------------------------------------------------------------


async def test_earnings_show_earned_paid_out_pending_holding_and_available(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    a_id, a_public = await listing(db, seller, "Alpha")
    b_id, b_public = await listing(db, seller, "Beta")
    await earn(db, seller, 20 * USD, listing_id=a_id, at=NOW - timedelta(days=1))
    await earn(db, seller, 10 * USD, listing_id=a_id, at=NOW - timedelta(hours=1))
    await earn(db, seller, 40 * USD, listing_id=b_id, at=NOW - timedelta(hours=2))
    await earn(db, seller, 40 * USD, listing_id=b_id, at=NOW - timedelta(days=45))  # outside the window
    payouts = payouts_of(app, None)
    paid, _ = await payouts.request(seller, 20 * USD)
    await payouts.mark_paid(paid.id, "SEPA 1", await admin_id(db))
    await payouts.request(seller, 15 * USD)

    response = await client.get("/api/seller/earnings", headers=auth)

    assert response.status_code == 200, response.text
    body = response.json()
    # Earned within the last 7 days (18 + 9 + 36) is held; 99 earned = 20 + 15 + 63 + 1.
    assert (
        body["earned_usd"],
        body["paid_out_usd"],
        body["pending_usd"],
        body["holding_usd"],
        body["available_usd"],
    ) == ("99.000000", "20.000000", "15.000000", "63.000000", "1.000000")
    assert body["next_payable_at"] == "2030-01-22T12:00:00Z"  # the oldest held request, a day old, plus 7 days
    assert body["by_listing"] == [
        {"listing_id": b_id, "public_id": b_public, "name": "Beta", "earned_usd": "36.000000", "requests": 1},
        {"listing_id": a_id, "public_id": a_public, "name": "Alpha", "earned_usd": "27.000000", "requests": 2},
    ]
    assert body["by_day"] == [
        {"date": "2030-01-15", "earned_usd": "18.000000", "requests": 1},
        {"date": "2030-01-16", "earned_usd": "45.000000", "requests": 2},
    ]


async def test_earnings_breakdowns_follow_since_and_until(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    seller, auth = await user(client)
    listing_id, _ = await listing(db, seller, "Old")
    await earn(db, seller, 10 * USD, listing_id=listing_id, at=NOW - timedelta(days=45))
    await earn(db, seller, 10 * USD, listing_id=listing_id, at=NOW)

    response = await client.get(
        "/api/seller/earnings", params={"since": "2029-11-01T00:00:00Z", "until": "2029-12-31"}, headers=auth
    )

    body = response.json()
    assert body["earned_usd"] == "18.000000"  # totals are all-time
    assert [(d["date"], d["earned_usd"]) for d in body["by_day"]] == [("2029-12-02", "9.000000")]
    assert [entry["requests"] for entry in body["by_listing"]] == [1]


async def test_earnings_of_a_user_who_never_sold_are_zero(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    _, auth = await user(client)
    body = (await client.get("/api/seller/earnings", headers=auth)).json()
    assert (body["earned_usd"], body["available_usd"], body["by_listing"], body["by_day"]) == (
        "0.000000",
        "0.000000",
        [],
        [],
    )


async def test_earnings_need_a_session(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    assert (await client.get("/api/seller/earnings")).status_code == 401


def assert_refused(response: httpx.Response, param: str) -> None:
    """A 400 in OpenAI's error shape naming `param`."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert (error["type"], error["param"]) == ("invalid_request_error", param), error


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("until", "0001-01-05"),  # the default window (30 days before) would start before year 1
        ("until", "9999-12-31T23:59:59-05:00"),  # past datetime.max once moved to UTC
        ("until", "9999-12-31"),
        ("since", "0001-01-01T00:00:00+05:00"),
        ("until", "2024-W10-1"),
        ("until", "2030-01-10T00:00:00 01:00"),  # an unencoded + arrives as a space
    ],
)
async def test_earnings_refuse_a_date_outside_1970_to_2199_or_in_another_format_naming_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, param: str, value: str
) -> None:
    _, auth = await user(client)
    assert_refused(await client.get("/api/seller/earnings", params={param: value}, headers=auth), param)


async def test_earnings_take_the_first_and_last_days_of_the_window(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    _, auth = await user(client)
    early = await client.get("/api/seller/earnings", params={"until": "1970-01-05"}, headers=auth)
    late = await client.get("/api/seller/earnings", params={"since": "2199-12-01", "until": "2199-12-31"}, headers=auth)
    assert (early.status_code, early.json()["since"]) == (200, "1969-12-06T00:00:00Z")
    assert (late.status_code, late.json()["until"]) == (200, "2199-12-31T00:00:00Z")


# ---- the holding period -------------------------------------------------------------------------


async def test_earnings_within_the_holding_period_cannot_be_paid_out_yet(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD, at=NOW - timedelta(days=1))  # 27 earned yesterday

    everything = await request_payout(client, auth)
    explicit = await request_payout(client, auth, {"amount_usd": "20.00"})

    assert error_code(everything, 409) == "conflict"
    assert "27.000000 USD more is in the holding period" in everything.json()["error"]["message"]
    assert error_code(explicit, 409) == "conflict"
    assert await available(db, seller) == 27 * USD  # nothing left the earnings account
    body = (await client.get("/api/seller/earnings", headers=auth)).json()
    assert (body["holding_usd"], body["available_usd"], body["next_payable_at"]) == (
        "27.000000",
        "0.000000",
        "2030-01-22T12:00:00Z",
    )


async def test_held_earnings_become_payable_once_the_clock_passes_the_holding_period(
    client: httpx.AsyncClient, clock: Clock, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    earned_at = NOW - timedelta(days=1)
    await earn(db, seller, 30 * USD, at=earned_at)

    clock.at = earned_at + HOLD - timedelta(minutes=1)
    assert error_code(await request_payout(client, auth), 409) == "conflict"
    clock.at = earned_at + HOLD
    response = await request_payout(client, auth)

    assert response.status_code == 201, response.text
    assert response.json()["amount_usd"] == "27.000000"
    assert await available(db, seller) == 0


async def test_only_what_was_earned_within_the_holding_period_is_held(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD)  # 27, past the holding period
    await earn(db, seller, 20 * USD, at=NOW - timedelta(hours=1))  # 18, held

    response = await request_payout(client, auth)

    assert response.status_code == 201, response.text
    assert response.json()["amount_usd"] == "27.000000"
    assert await available(db, seller) == 18 * USD
    body = (await client.get("/api/seller/earnings", headers=auth)).json()
    assert (body["pending_usd"], body["holding_usd"], body["available_usd"]) == ("27.000000", "18.000000", "0.000000")


async def test_a_holding_period_of_zero_days_makes_earnings_payable_at_once(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection
) -> None:
    seller, _ = await user(client)
    await earn(db, seller, 30 * USD, at=NOW)
    service = Payouts(
        app.state.services.db,
        min_micro=10 * USD,
        stripe=None,
        hold_days=0,
        approval_micro=1000 * USD,
        clock=app.state.services.clock,
    )

    payout, _ = await service.request(seller, None)

    assert payout.amount_micro == 27 * USD


async def test_the_weekly_run_leaves_held_earnings_for_a_later_week(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD, at=NOW - timedelta(days=1))
    stripe = FakeStripe(settings, transfer_made)
    service = payouts_of(app, stripe)

    await service.run(NOW)
    assert await db.fetchval("SELECT count(*) FROM payouts WHERE seller_id = $1", uuid.UUID(seller)) == 0
    await service.run(NOW + HOLD)

    rows = await db.fetch("SELECT amount_micro, status FROM payouts WHERE seller_id = $1", uuid.UUID(seller))
    assert [(r["amount_micro"], r["status"]) for r in rows] == [(27 * USD, "paid")]
    assert sent_for(stripe, seller) == 1


# ---- payout account -----------------------------------------------------------------------------


async def test_a_seller_stores_and_reads_back_a_connected_account(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    _, auth = await user(client)
    assert (await client.get("/api/seller/payout-account", headers=auth)).json()["stripe_account_id"] is None
    await connect(client, auth, "acct_ABCdef123456")
    await connect(client, auth, ACCOUNT)
    assert (await client.get("/api/seller/payout-account", headers=auth)).json()["stripe_account_id"] == ACCOUNT


async def test_a_payout_account_of_another_shape_is_refused(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    _, auth = await user(client)
    response = await client.put("/api/seller/payout-account", json={"stripe_account_id": "cus_123456"}, headers=auth)
    assert error_code(response, 400) == "invalid_request"
    assert response.json()["error"]["param"] == "stripe_account_id"


# ---- requesting ---------------------------------------------------------------------------------


async def test_a_payout_request_takes_the_money_out_of_earnings_at_once(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 40 * USD)

    response = await request_payout(client, auth, {"amount_usd": "25.00"})

    assert response.status_code == 201, response.text
    payout = response.json()
    assert {"id", "amount_usd", "status", "method", "created_at"} <= set(payout)
    assert (payout["amount_usd"], payout["status"], payout["method"]) == ("25.000000", "pending", "manual")
    assert await available(db, seller) == 11 * USD
    assert await transfers_of(db, payout["id"]) == [(f"payout:{payout['id']}", "payout")]


async def test_a_payout_of_everything_leaves_the_sub_cent_remainder_available(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 12_345_678)  # the seller's share: 11_111_111

    response = await request_payout(client, auth)

    assert response.status_code == 201, response.text
    assert response.json()["amount_usd"] == "11.110000"
    assert await available(db, seller) == 1_111


async def test_a_payout_below_the_minimum_is_refused_with_400(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 100 * USD)
    response = await request_payout(client, auth, {"amount_usd": "9.99"})
    assert error_code(response, 400) == "invalid_request"
    assert await available(db, seller) == 90 * USD


async def test_a_payout_above_what_is_available_is_refused_with_409(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 20 * USD)
    response = await request_payout(client, auth, {"amount_usd": "18.01"})
    assert error_code(response, 409) == "conflict"
    assert await available(db, seller) == 18 * USD


async def test_two_concurrent_requests_for_everything_pay_it_once(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD)

    responses = await asyncio.gather(request_payout(client, auth), request_payout(client, auth))

    assert sorted(r.status_code for r in responses) == [201, 409]
    assert await available(db, seller) == 0
    assert await db.fetchval("SELECT count(*) FROM payouts WHERE seller_id = $1", uuid.UUID(seller)) == 1


async def test_two_concurrent_explicit_requests_cannot_both_take_the_same_money(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD)  # 27 available

    responses = await asyncio.gather(*(request_payout(client, auth, {"amount_usd": "20.00"}) for _ in range(3)))

    assert sorted(r.status_code for r in responses) == [201, 409, 409]
    assert await available(db, seller) == 7 * USD


async def test_a_retried_request_with_the_same_idempotency_key_creates_one_payout(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 50 * USD)
    headers = auth | {"Idempotency-Key": "retry-1"}

    first = await client.post("/api/seller/payouts", json={"amount_usd": "10.00"}, headers=headers)
    second = await client.post("/api/seller/payouts", json={"amount_usd": "10.00"}, headers=headers)

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert await available(db, seller) == 35 * USD


async def test_the_same_idempotency_key_with_another_amount_is_409_and_creates_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 50 * USD)
    headers = auth | {"Idempotency-Key": "retry-2"}
    first = await client.post("/api/seller/payouts", json={"amount_usd": "10.00"}, headers=headers)
    assert first.status_code == 201, first.text

    other_amount = await client.post("/api/seller/payouts", json={"amount_usd": "12.00"}, headers=headers)
    everything = await client.post("/api/seller/payouts", json={}, headers=headers)

    for response in (other_amount, everything):
        assert error_code(response, 409) == "conflict"
        assert response.json()["error"]["param"] == "Idempotency-Key"
    assert await db.fetchval("SELECT count(*) FROM payouts WHERE seller_id = $1", uuid.UUID(seller)) == 1
    assert await available(db, seller) == 35 * USD


async def test_a_request_for_everything_replayed_as_everything_answers_the_first_payout(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 50 * USD)
    headers = auth | {"Idempotency-Key": "everything-1"}

    first = await client.post("/api/seller/payouts", json={}, headers=headers)
    second = await client.post("/api/seller/payouts", headers=headers)

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


async def test_a_seller_lists_their_payouts_newest_first_page_by_page(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 100 * USD)
    made = [(await request_payout(client, auth, {"amount_usd": "10.00"})).json()["id"] for _ in range(3)]

    first = (await client.get("/api/seller/payouts", params={"limit": 2}, headers=auth)).json()
    second = (
        await client.get("/api/seller/payouts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth)
    ).json()

    assert [p["id"] for p in first["data"] + second["data"]] == made[::-1]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor("9999-12-31T23:59:59-05:00", str(uuid.uuid4())),  # year 9999 (and past datetime.max in UTC)
        encode_cursor("9999-12-31T23:59:59", str(uuid.uuid4())),
        encode_cursor("0001-01-01T00:00:00+05:00", str(uuid.uuid4())),  # before year 1 in UTC
        encode_cursor(NOW.isoformat(), "not-a-uuid"),
        encode_cursor(NOW.isoformat(), "{" + str(uuid.uuid4()) + "}"),  # a UUID, but not as the API writes it
        encode_cursor(NOW.isoformat(), str(uuid.uuid4()), "extra"),
    ],
)
async def test_a_payout_cursor_with_an_impossible_time_or_a_foreign_id_is_refused_naming_cursor(
    client: httpx.AsyncClient, db: asyncpg.Connection, cursor: str
) -> None:
    _, auth = await user(client)
    response = await client.get("/api/seller/payouts", params={"cursor": cursor}, headers=auth)
    assert_refused(response, "cursor")
    assert response.json()["error"]["message"] == "cursor is not one this API gave out"


async def test_another_seller_can_neither_see_nor_list_a_payout(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 20 * USD)
    payout = (await request_payout(client, auth)).json()
    _, other = await user(client)

    assert error_code(await client.get(f"/api/seller/payouts/{payout['id']}", headers=other), 404) == "not_found"
    assert (await client.get("/api/seller/payouts", headers=other)).json()["data"] == []
    assert (await client.get(f"/api/seller/payouts/{payout['id']}", headers=auth)).json()["status"] == "pending"


# ---- processing through Stripe ------------------------------------------------------------------


async def test_a_stripe_payout_is_sent_as_a_transfer_and_marked_paid(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    assert (created["method"], created["destination"]) == ("stripe", ACCOUNT)
    stripe = FakeStripe(settings, transfer_made)

    payout = await payouts_of(app, stripe).process(created["id"])

    assert (payout.status, payout.stripe_transfer_id) == ("paid", "tr_" + created["id"].replace("-", ""))
    assert stripe.form() == {
        "amount": "2700",
        "currency": "usd",
        "destination": ACCOUNT,
        "metadata[payout_id]": created["id"],
        "metadata[seller_id]": seller,
    }
    assert stripe.requests[0].headers["idempotency-key"] == f"payout-{created['id']}"
    assert await available(db, seller) == 0
    assert await transfers_of(db, created["id"]) == [(f"payout:{created['id']}", "payout")]
    shown = (await client.get(f"/api/seller/payouts/{created['id']}", headers=auth)).json()
    assert (shown["status"], shown["stripe_transfer_id"]) == ("paid", payout.stripe_transfer_id)


async def test_a_paid_payout_is_not_sent_again(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    stripe = FakeStripe(settings, transfer_made)
    service = payouts_of(app, stripe)

    await service.process(created["id"])
    again = await service.process(created["id"])

    assert again.status == "paid"
    assert len(stripe.requests) == 1


async def test_a_payout_stripe_refuses_fails_and_gives_the_money_back(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()

    payout = await payouts_of(app, FakeStripe(settings, transfer_refused)).process(created["id"])

    assert payout.status == "failed"
    assert payout.failure_reason is not None and "No such destination" in payout.failure_reason
    assert await available(db, seller) == 27 * USD
    assert await transfers_of(db, created["id"]) == [
        (f"payout:{created['id']}", "payout"),
        (f"payout-reversal:{created['id']}", "payout_failed"),
    ]
    earnings = (await client.get("/api/seller/earnings", headers=auth)).json()
    assert (earnings["pending_usd"], earnings["paid_out_usd"], earnings["available_usd"]) == (
        "0.000000",
        "0.000000",
        "27.000000",
    )


async def test_a_payout_stays_pending_while_stripe_is_unreachable_and_is_paid_on_a_later_try(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    stripe = FakeStripe(settings, stripe_down)

    assert (await payouts_of(app, stripe).process(created["id"])).status == "pending"
    assert await available(db, seller) == 0  # still on its way: not available again
    stripe.answer = transfer_made
    paid = await payouts_of(app, stripe).process(created["id"])

    assert paid.status == "paid"
    # The same Idempotency-Key each time: had the first transfer been made, Stripe returns it.
    assert {r.headers["idempotency-key"] for r in stripe.requests} == {f"payout-{created['id']}"}


async def test_without_stripe_configured_a_stripe_payout_stays_pending(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    assert (await payouts_of(app, None).process(created["id"])).status == "pending"


async def test_a_manual_payout_is_left_for_an_admin_by_processing(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    stripe = FakeStripe(settings, transfer_made)
    assert (await payouts_of(app, stripe).process(created["id"])).status == "pending"
    assert stripe.requests == []


async def test_an_admin_cancel_waits_for_a_transfer_in_flight_and_then_finds_it_paid(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    boss = await admin_id(db)
    in_flight, release = asyncio.Event(), asyncio.Event()

    async def slow_transfer(request: httpx.Request) -> httpx.Response:
        in_flight.set()
        await release.wait()
        return await transfer_made(request)

    service = payouts_of(app, FakeStripe(settings, slow_transfer))
    processing = asyncio.create_task(service.process(created["id"]))
    await in_flight.wait()
    cancelling = asyncio.create_task(service.cancel(created["id"], boss))
    await wait_for_a_lock_wait(db)
    release.set()

    assert (await processing).status == "paid"
    with pytest.raises(Conflict):
        await cancelling
    assert await available(db, seller) == 0


async def wait_for_a_lock_wait(db: asyncpg.Connection) -> None:
    """Until some session of this database waits on a row lock (the cancel, behind the transfer)."""
    deadline = asyncio.get_running_loop().time() + 10
    while not await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
    ):
        assert asyncio.get_running_loop().time() < deadline, "the cancel never waited for the payout's lock"
        await asyncio.sleep(0.01)


# ---- approval -----------------------------------------------------------------------------------


async def big_payout(client: httpx.AsyncClient, db: asyncpg.Connection) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A connected seller's payout of 1,800 USD, above the default approval amount of 1,000."""
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 2_000 * USD)
    response = await request_payout(client, auth)
    assert response.status_code == 201, response.text
    return seller, auth, response.json()


async def test_a_payout_above_the_approval_amount_waits_for_an_admin_and_is_not_sent(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, _, created = await big_payout(client, db)
    assert (created["amount_usd"], created["status"]) == ("1800.000000", "pending")
    assert (created["approval_required"], created["awaiting_approval"], created["approved_at"]) == (True, True, None)
    stripe = FakeStripe(settings, transfer_made)
    service = payouts_of(app, stripe)

    processed = await service.process(created["id"])
    report = await service.run(NOW)

    assert processed.status == "pending"
    assert sent_for(stripe, seller) == 0
    assert report.awaiting_approval >= 1
    assert await available(db, seller) == 0  # the money is still on its way out, not available again


async def test_a_payout_up_to_the_approval_amount_needs_no_approval(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 2_000 * USD)
    response = await request_payout(client, auth, {"amount_usd": "1000.00"})
    assert response.status_code == 201, response.text
    assert (response.json()["approval_required"], response.json()["awaiting_approval"]) == (False, False)


async def test_an_admin_approves_a_waiting_payout_and_processing_then_sends_it(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    _, auth, created = await big_payout(client, db)
    boss_id, boss = await admin_account(client, db)

    response = await client.post(f"/api/admin/payouts/{created['id']}/approve", headers=boss)

    assert response.status_code == 200, response.text
    approved = response.json()
    assert (approved["status"], approved["approval_required"], approved["awaiting_approval"]) == (
        "pending",
        True,
        False,
    )
    assert approved["approved_at"] is not None
    row = await db.fetchrow("SELECT approved_by, approved_at FROM payouts WHERE id = $1", uuid.UUID(created["id"]))
    assert row is not None and str(row["approved_by"]) == boss_id and row["approved_at"] is not None
    stripe = FakeStripe(settings, transfer_made)
    paid = await payouts_of(app, stripe).process(created["id"])
    assert (paid.status, stripe.form()["amount"]) == ("paid", "180000")
    shown = (await client.get(f"/api/seller/payouts/{created['id']}", headers=auth)).json()
    assert (shown["status"], shown["awaiting_approval"]) == ("paid", False)


async def test_only_a_pending_payout_awaiting_approval_can_be_approved(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD)
    small = (await request_payout(client, auth)).json()
    _, _, big = await big_payout(client, db)
    _, _, cancelled = await big_payout(client, db)
    _, boss = await admin_account(client, db)
    assert (await client.post(f"/api/admin/payouts/{cancelled['id']}/cancel", headers=boss)).status_code == 200
    assert (await client.post(f"/api/admin/payouts/{big['id']}/approve", headers=boss)).status_code == 200

    for payout in (small, big, cancelled):
        answer = await client.post(f"/api/admin/payouts/{payout['id']}/approve", headers=boss)
        assert error_code(answer, 409) == "conflict"
    assert await db.fetchval("SELECT approved_at FROM payouts WHERE id = $1", uuid.UUID(small["id"])) is None


async def test_an_admin_can_cancel_or_mark_paid_a_payout_awaiting_approval(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, _, first = await big_payout(client, db)
    _, _, second = await big_payout(client, db)
    _, boss = await admin_account(client, db)

    cancelled = await client.post(f"/api/admin/payouts/{first['id']}/cancel", headers=boss)
    paid = await client.post(f"/api/admin/payouts/{second['id']}/mark-paid", json={"reference": "SEPA 9"}, headers=boss)

    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert (paid.status_code, paid.json()["status"]) == (200, "paid")
    assert await available(db, seller) == 1_800 * USD


# ---- admin --------------------------------------------------------------------------------------


async def test_an_admin_marks_a_payout_paid_without_moving_money(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    boss = await admin(client, db)

    response = await client.post(
        f"/api/admin/payouts/{created['id']}/mark-paid", json={"reference": "SEPA 2030-0042"}, headers=boss
    )

    assert response.status_code == 200, response.text
    assert (response.json()["status"], response.json()["method"], response.json()["reference"]) == (
        "paid",
        "manual",
        "SEPA 2030-0042",
    )
    assert await transfers_of(db, created["id"]) == [(f"payout:{created['id']}", "payout")]
    earnings = (await client.get("/api/seller/earnings", headers=auth)).json()
    assert (earnings["paid_out_usd"], earnings["pending_usd"]) == ("27.000000", "0.000000")


async def test_an_admin_cancels_a_payout_and_the_money_is_available_again(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    boss = await admin(client, db)

    response = await client.post(f"/api/admin/payouts/{created['id']}/cancel", headers=boss)

    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert await available(db, seller) == 27 * USD
    assert [kind for _, kind in await transfers_of(db, created["id"])] == ["payout", "payout_failed"]


async def test_only_a_pending_payout_can_be_cancelled_or_marked_paid(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    boss = await admin(client, db)
    base = f"/api/admin/payouts/{created['id']}"
    assert (await client.post(f"{base}/cancel", headers=boss)).status_code == 200

    assert error_code(await client.post(f"{base}/cancel", headers=boss), 409) == "conflict"
    assert error_code(await client.post(f"{base}/mark-paid", json={"reference": "x"}, headers=boss), 409) == "conflict"
    assert await available(db, seller) == 27 * USD


async def test_a_non_admin_gets_403_on_the_admin_payout_routes(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await earn(db, seller, 30 * USD)
    created = (await request_payout(client, auth)).json()
    base = f"/api/admin/payouts/{created['id']}"

    assert error_code(await client.post(f"{base}/cancel", headers=auth), 403) == "forbidden"
    assert error_code(await client.post(f"{base}/mark-paid", json={"reference": "x"}, headers=auth), 403) == "forbidden"
    assert error_code(await client.post(f"{base}/approve", headers=auth), 403) == "forbidden"
    assert (await client.get(f"/api/seller/payouts/{created['id']}", headers=auth)).json()["status"] == "pending"


async def test_an_admin_acting_on_an_unknown_payout_gets_404(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    boss = await admin(client, db)
    for action in ("cancel", "approve"):
        for path in (f"/api/admin/payouts/{uuid.uuid4()}/{action}", f"/api/admin/payouts/not-an-id/{action}"):
            assert error_code(await client.post(path, headers=boss), 404) == "not_found"


# ---- the weekly run -----------------------------------------------------------------------------


async def test_the_weekly_run_pays_each_eligible_seller_once_per_week(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    stripe = FakeStripe(settings, transfer_made)
    service = payouts_of(app, stripe)

    await service.run(NOW)
    await earn(db, seller, 30 * USD)  # more earned the same week: waits for next week's run
    second = await service.run(NOW + timedelta(days=2))

    assert second.requested == 0
    rows = await db.fetch("SELECT amount_micro, status FROM payouts WHERE seller_id = $1", uuid.UUID(seller))
    assert [(r["amount_micro"], r["status"]) for r in rows] == [(27 * USD, "paid")]
    assert await available(db, seller) == 27 * USD
    assert sent_for(stripe, seller) == 1

    await service.run(NOW + timedelta(days=7))
    assert await available(db, seller) == 0
    assert await db.fetchval("SELECT count(*) FROM payouts WHERE seller_id = $1", uuid.UUID(seller)) == 2


async def test_two_concurrent_weekly_runs_pay_a_seller_once(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    stripe = FakeStripe(settings, transfer_made)

    await asyncio.gather(payouts_of(app, stripe).run(NOW), payouts_of(app, stripe).run(NOW))

    rows = await db.fetch("SELECT status FROM payouts WHERE seller_id = $1", uuid.UUID(seller))
    assert [r["status"] for r in rows] == ["paid"]
    assert sent_for(stripe, seller) == 1


async def test_the_queued_payout_run_pays_each_eligible_seller_for_the_week_of_its_period(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection, database_dsn: str
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    stripe = FakeStripe(settings, transfer_made)
    registry = JobRegistry()
    payout_jobs.register(registry, payouts_of(app, stripe), settings.payout_cron)
    monday = datetime(2030, 1, 14, 6, 0, tzinfo=UTC)  # the tick of NOW's week, as the scheduler queues it

    async with running_worker(database_dsn, registry, db=app.state.services.db):
        job_id = await enqueue(app.state.services.db, payout_jobs.PAYOUT_RUN, {"period": monday.isoformat()})

        async def ran() -> bool:
            logged = await db.fetch("SELECT status::text FROM pgqueuer_log WHERE job_id = $1", job_id)
            return "successful" in [r["status"] for r in logged]

        await eventually(ran)

    rows = await db.fetch(
        "SELECT amount_micro, status, request_key FROM payouts WHERE seller_id = $1", uuid.UUID(seller)
    )
    assert [(r["amount_micro"], r["status"], r["request_key"]) for r in rows] == [
        (27 * USD, "paid", f"payout-run:{seller}:2030-W03")
    ]
    assert sent_for(stripe, seller) == 1


async def test_a_queued_payout_run_that_stripe_does_not_answer_fails_so_the_queue_retries_it(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    seller, auth = await user(client)
    await connect(client, auth)
    await earn(db, seller, 30 * USD)
    registry = JobRegistry()
    payout_jobs.register(registry, payouts_of(app, FakeStripe(settings, stripe_down)), settings.payout_cron)
    task = registry.tasks[payout_jobs.PAYOUT_RUN]

    with pytest.raises(PaymentsUnavailable, match="did not answer"):
        await task.handler(Job(1, task.name, {"period": NOW.isoformat()}, 1))

    assert task.retry.delay_after(1) is not None
    rows = await db.fetch("SELECT status FROM payouts WHERE seller_id = $1", uuid.UUID(seller))
    assert [r["status"] for r in rows] == ["pending"]  # taken out of earnings once; sent on a later try


async def test_the_weekly_run_skips_sellers_without_an_account_or_below_the_minimum(
    client: httpx.AsyncClient, app: Starlette, settings: Settings, db: asyncpg.Connection
) -> None:
    unconnected, _ = await user(client)
    await earn(db, unconnected, 30 * USD)
    small, small_auth = await user(client)
    await connect(client, small_auth)
    await earn(db, small, 11 * USD)  # 9.90 earned

    await payouts_of(app, FakeStripe(settings, transfer_made)).run(NOW)

    assert await available(db, unconnected) == 27 * USD
    assert await available(db, small) == 9_900_000
    count = await db.fetchval(
        "SELECT count(*) FROM payouts WHERE seller_id = ANY($1::uuid[])", [uuid.UUID(unconnected), uuid.UUID(small)]
    )
    assert count == 0
