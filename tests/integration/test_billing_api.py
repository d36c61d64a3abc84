"""The buyer's billing API (balance, transactions, usage) and the admin's credits, on the real app.

The app runs in this process (httpx.ASGITransport) on the session's Postgres database and Redis
prefix. Money gets into an account the way the product puts it there: promotional credit through
`grant_credit` (or the admin endpoint under test), and usage as the settlement worker writes it, a
usage record plus its `usage:<request id>` transfer, so the ledger audit holds after every test.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from starlette.applications import Starlette

from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.credits import grant_credit
from aichat_gateway.queryparams import encode_cursor

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

PASSWORD = "billing-api-password"
USD = 1_000_000
T0 = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    auth: dict[str, str]


async def register(client: httpx.AsyncClient, tag: str = "buyer") -> Account:
    email = f"{tag}-{uuid.uuid4().hex[:10]}@example.com"
    registered = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    return await login(client, registered.json()["id"], email)


async def login(client: httpx.AsyncClient, user_id: str, email: str) -> Account:
    answer = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    client.cookies.clear()  # these tests speak bearer; the cookie would authenticate requests meant to be anonymous
    return Account(user_id, email, {"authorization": f"Bearer {answer.json()['access_token']}"})


async def register_admin(client: httpx.AsyncClient, db: asyncpg.Connection) -> Account:
    """A user made admin in Postgres; the role is in the session token, so it logs in again."""
    user = await register(client, "admin")
    await db.execute("UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(user.id))
    return await login(client, user.id, user.email)


def assert_error(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    """OpenAI's error shape with this status, naming `param`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] == param, error
    return error


async def credit(app: Starlette, user_id: str, amount_micro: int, reason: str = "test funds") -> None:
    """Promotional credit as the product grants it: Postgres first, then the hot view."""
    await grant_credit(
        app.state.services.db,
        user_id=user_id,
        amount_micro=amount_micro,
        reason=reason,
        granted_by=None,
        idempotency_key=None,
        on_balance_change=app.state.services.hot.credit,
    )


async def charge(
    db: asyncpg.Connection,
    buyer_id: str,
    *,
    cost_micro: int,
    created_at: datetime = T0,
    request_id: str | None = None,
    key_id: uuid.UUID | None = None,
    model: str = "gpt-4o-mini",
) -> str:
    """One settled request, as the settlement worker writes it: the usage record and, for a request
    that cost something, its transfer (the buyer pays the platform; sellers are not the point here)."""
    rid = request_id or f"req-{uuid.uuid4().hex}"
    async with db.transaction():
        transfer = None
        if cost_micro:
            buyer = await ledger.account_id(db, ledger.AccountKind.BUYER, buyer_id)
            platform = await ledger.account_id(db, ledger.AccountKind.PLATFORM)
            transfer = await ledger.post(
                db,
                idempotency_key=f"usage:{rid}",
                kind="usage",
                legs=[(buyer, -cost_micro), (platform, cost_micro)],
                memo={"request_id": rid, "model": model},
            )
        await db.execute(
            """INSERT INTO usage_records (request_id, buyer_id, key_id, model, prompt_tokens, completion_tokens,
                                          cost_micro, held_micro, fee_micro, outcome, status, stream, created_at,
                                          transfer_id)
               VALUES ($1, $2, $3, $4, 11, 22, $5, $5, $5, 'ok', 200, false, $6, $7)""",
            rid,
            uuid.UUID(buyer_id),
            key_id,
            model,
            cost_micro,
            created_at,
            transfer,
        )
    return rid


async def walk(client: httpx.AsyncClient, path: str, auth: dict[str, str], **params: str) -> list[list[dict[str, Any]]]:
    """Every page of a cursor-paginated list, following next_cursor until it is null."""
    pages: list[list[dict[str, Any]]] = []
    query = dict(params)
    for _ in range(100):  # a cursor that never ends would otherwise hang the test until its timeout
        answer = await client.get(path, params=query, headers=auth)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        pages.append(body["data"])
        if body["next_cursor"] is None:
            return pages
        query["cursor"] = body["next_cursor"]
    raise AssertionError(f"{path} gave a next_cursor 100 times")


@pytest.fixture
async def buyer(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.fixture
async def admin(client: httpx.AsyncClient, db: asyncpg.Connection) -> Account:
    return await register_admin(client, db)


@pytest.fixture(autouse=True)
async def sound_ledger(db: asyncpg.Connection) -> AsyncIterator[None]:
    """DESIGN.md's ledger invariants hold after every test here (the audit reads the whole ledger)."""
    yield
    assert await audit(db) == []


# ---- balance -------------------------------------------------------------------------------------


async def test_a_new_buyer_has_nothing_held_and_nothing_available(client: httpx.AsyncClient, buyer: Account) -> None:
    answer = await client.get("/api/billing/balance", headers=buyer.auth)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"balance_usd": "0.000000", "held_usd": "0.000000", "available_usd": "0.000000"}


async def test_a_credit_granted_before_the_first_look_is_read_from_postgres(
    client: httpx.AsyncClient, app: Starlette, buyer: Account
) -> None:
    await credit(app, buyer.id, 12_345_678)
    answer = await client.get("/api/billing/balance", headers=buyer.auth)
    assert answer.json() == {"balance_usd": "12.345678", "held_usd": "0.000000", "available_usd": "12.345678"}


async def test_a_credit_granted_after_the_first_look_reaches_the_hot_view(
    client: httpx.AsyncClient, app: Starlette, buyer: Account
) -> None:
    await client.get("/api/billing/balance", headers=buyer.auth)
    await credit(app, buyer.id, 3 * USD)
    answer = await client.get("/api/billing/balance", headers=buyer.auth)
    assert answer.json() == {"balance_usd": "3.000000", "held_usd": "0.000000", "available_usd": "3.000000"}


async def test_an_open_hold_is_held_and_not_available(
    client: httpx.AsyncClient, app: Starlette, buyer: Account
) -> None:
    await credit(app, buyer.id, 5 * USD)
    await client.get("/api/billing/balance", headers=buyer.auth)  # loads the hot view
    held = await app.state.services.hot.hold(
        buyer_id=buyer.id, request_id=f"req-{uuid.uuid4().hex}", amount_micro=1_250_000, key_id="k", ttl_s=300
    )
    assert held.ok
    answer = await client.get("/api/billing/balance", headers=buyer.auth)
    assert answer.json() == {"balance_usd": "5.000000", "held_usd": "1.250000", "available_usd": "3.750000"}


async def test_a_settled_hold_is_charged_and_no_longer_held(
    client: httpx.AsyncClient, app: Starlette, buyer: Account
) -> None:
    await credit(app, buyer.id, 5 * USD)
    await client.get("/api/billing/balance", headers=buyer.auth)
    rid = f"req-{uuid.uuid4().hex}"
    await app.state.services.hot.hold(buyer_id=buyer.id, request_id=rid, amount_micro=USD, key_id="k", ttl_s=300)
    assert await app.state.services.hot.settle(buyer_id=buyer.id, request_id=rid, cost_micro=400_000) == 400_000
    answer = await client.get("/api/billing/balance", headers=buyer.auth)
    assert answer.json() == {"balance_usd": "4.600000", "held_usd": "0.000000", "available_usd": "4.600000"}


@pytest.mark.parametrize("path", ["/api/billing/balance", "/api/billing/transactions", "/api/billing/usage"])
async def test_the_billing_lists_refuse_a_caller_without_a_session(client: httpx.AsyncClient, path: str) -> None:
    error = assert_error(await client.get(path), 401, None)
    assert error["type"] == "authentication_error"


# ---- transactions --------------------------------------------------------------------------------


async def test_transactions_are_newest_first_with_running_balances(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection, buyer: Account
) -> None:
    await credit(app, buyer.id, 10 * USD, reason="welcome")
    rid = await charge(db, buyer.id, cost_micro=1_500_000)
    await credit(app, buyer.id, 2 * USD, reason="sorry")
    answer = await client.get("/api/billing/transactions", headers=buyer.auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    shown = [(t["type"], t["amount_usd"], t["balance_after_usd"], t["description"]) for t in body["data"]]
    assert shown == [
        ("credit", "2.000000", "10.500000", "credit: sorry"),
        ("usage", "-1.500000", "8.500000", f"gpt-4o-mini {rid}"),
        ("credit", "10.000000", "10.000000", "credit: welcome"),
    ]
    assert body["next_cursor"] is None


async def test_a_transaction_carries_an_id_and_a_utc_time(
    client: httpx.AsyncClient, app: Starlette, buyer: Account
) -> None:
    await credit(app, buyer.id, USD)
    [entry] = (await client.get("/api/billing/transactions", headers=buyer.auth)).json()["data"]
    assert entry["id"].isdigit()
    assert entry["created_at"].endswith("Z")
    assert abs(datetime.fromisoformat(entry["created_at"].replace("Z", "+00:00")) - datetime.now(UTC)) < timedelta(
        minutes=5
    )


@pytest.mark.parametrize("limit", ["0", "201", "x", "-1", "1.5", "", " 5", "²", "١٢"])
async def test_a_limit_outside_1_to_200_is_refused_naming_limit(
    client: httpx.AsyncClient, buyer: Account, limit: str
) -> None:
    for path in ("/api/billing/transactions", "/api/billing/usage"):
        assert_error(await client.get(path, params={"limit": limit}, headers=buyer.auth), 400, "limit")


@pytest.mark.parametrize("limit", ["1", "200"])
async def test_a_limit_of_1_or_200_is_accepted(client: httpx.AsyncClient, buyer: Account, limit: str) -> None:
    for path in ("/api/billing/transactions", "/api/billing/usage"):
        assert (await client.get(path, params={"limit": limit}, headers=buyer.auth)).status_code == 200


async def test_transaction_pages_walk_every_entry_exactly_once(
    client: httpx.AsyncClient, app: Starlette, buyer: Account
) -> None:
    for n in range(1, 8):
        await credit(app, buyer.id, n * USD, reason=f"grant {n}")
    pages = await walk(client, "/api/billing/transactions", buyer.auth, limit="3")
    assert [len(page) for page in pages] == [3, 3, 1]
    reasons = [t["description"] for page in pages for t in page]
    assert reasons == [f"credit: grant {n}" for n in range(7, 0, -1)]


async def test_a_full_last_page_has_no_next_cursor(client: httpx.AsyncClient, app: Starlette, buyer: Account) -> None:
    for _ in range(4):
        await credit(app, buyer.id, USD)
    pages = await walk(client, "/api/billing/transactions", buyer.auth, limit="2")
    assert [len(page) for page in pages] == [2, 2]


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!!",
        "not base64 at all",
        "A",
        encode_cursor("abc"),
        encode_cursor("-5"),
        encode_cursor("²"),
        encode_cursor("99999999999999999999999"),
        encode_cursor("12", "req-1"),  # a usage cursor
        encode_cursor(T0.isoformat(), "req-1"),
        encode_cursor("12") + "!!",  # base64 decoders skip stray characters; we do not
        encode_cursor("12") + "==",
    ],
)
async def test_a_tampered_or_foreign_transactions_cursor_is_refused_naming_cursor(
    client: httpx.AsyncClient, buyer: Account, cursor: str
) -> None:
    answer = await client.get("/api/billing/transactions", params={"cursor": cursor}, headers=buyer.auth)
    assert_error(answer, 400, "cursor")


async def test_another_buyers_entries_never_appear_in_transactions(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection, buyer: Account
) -> None:
    other = await register(client)
    await credit(app, other.id, 9 * USD, reason="for the other one")
    await charge(db, other.id, cost_micro=USD)
    await credit(app, buyer.id, USD, reason="mine")
    [mine] = await walk(client, "/api/billing/transactions", buyer.auth, limit="1")
    assert [t["description"] for t in mine] == ["credit: mine"]


async def test_another_buyers_cursor_shows_only_the_callers_own_older_entries(
    client: httpx.AsyncClient, app: Starlette, buyer: Account
) -> None:
    await credit(app, buyer.id, USD, reason="mine")
    other = await register(client)
    for _ in range(2):
        await credit(app, other.id, USD, reason="theirs")
    theirs = (await client.get("/api/billing/transactions", params={"limit": "1"}, headers=other.auth)).json()
    seen = await walk(client, "/api/billing/transactions", buyer.auth, cursor=theirs["next_cursor"])
    assert [t["description"] for page in seen for t in page] == ["credit: mine"]


# ---- usage ---------------------------------------------------------------------------------------


async def test_usage_rows_show_tokens_costs_and_times(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection, buyer: Account
) -> None:
    await credit(app, buyer.id, 10 * USD)
    key = uuid.uuid4()
    older = await charge(db, buyer.id, cost_micro=1, key_id=key, created_at=T0)
    newer = await charge(db, buyer.id, cost_micro=2_000_003, key_id=key, model="gpt-4o", created_at=T0 + timedelta(1))
    answer = await client.get("/api/billing/usage", headers=buyer.auth)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["next_cursor"] is None
    assert body["data"] == [
        {
            "request_id": newer,
            "key_id": str(key),
            "key_name": None,
            "model": "gpt-4o",
            "prompt_tokens": 11,
            "completion_tokens": 22,
            "cost_usd": "2.000003",
            "outcome": "ok",
            "status": 200,
            "stream": False,
            "created_at": "2024-03-11T12:00:00Z",
        },
        {
            "request_id": older,
            "key_id": str(key),
            "key_name": None,
            "model": "gpt-4o-mini",
            "prompt_tokens": 11,
            "completion_tokens": 22,
            "cost_usd": "0.000001",
            "outcome": "ok",
            "status": 200,
            "stream": False,
            "created_at": "2024-03-10T12:00:00Z",
        },
    ]


async def test_a_request_that_cost_nothing_shows_a_zero_cost(
    client: httpx.AsyncClient, db: asyncpg.Connection, buyer: Account
) -> None:
    await charge(db, buyer.id, cost_micro=0)
    [row] = (await client.get("/api/billing/usage", headers=buyer.auth)).json()["data"]
    assert (row["cost_usd"], row["key_id"]) == ("0.000000", None)


async def test_usage_is_filtered_by_key(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection, buyer: Account
) -> None:
    await credit(app, buyer.id, USD)
    first, second = uuid.uuid4(), uuid.uuid4()
    wanted = {await charge(db, buyer.id, cost_micro=10, key_id=first) for _ in range(2)}
    await charge(db, buyer.id, cost_micro=10, key_id=second)
    await charge(db, buyer.id, cost_micro=0)
    rows = (await client.get("/api/billing/usage", params={"key_id": str(first)}, headers=buyer.auth)).json()["data"]
    assert {r["request_id"] for r in rows} == wanted


async def test_usage_is_filtered_by_model(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection, buyer: Account
) -> None:
    await credit(app, buyer.id, USD)
    wanted = await charge(db, buyer.id, cost_micro=10, model="claude-3-5-haiku")
    await charge(db, buyer.id, cost_micro=10, model="gpt-4o-mini")
    rows = (await client.get("/api/billing/usage", params={"model": "claude-3-5-haiku"}, headers=buyer.auth)).json()
    assert [r["request_id"] for r in rows["data"]] == [wanted]


async def test_usage_since_is_inclusive_and_until_exclusive(
    client: httpx.AsyncClient, db: asyncpg.Connection, buyer: Account
) -> None:
    day = {d: await charge(db, buyer.id, cost_micro=0, created_at=T0 + timedelta(days=d)) for d in range(4)}
    params = {"since": "2024-03-11T12:00:00Z", "until": "2024-03-13T12:00:00+00:00"}
    rows = (await client.get("/api/billing/usage", params=params, headers=buyer.auth)).json()["data"]
    assert [r["request_id"] for r in rows] == [day[2], day[1]]


async def test_usage_takes_plain_dates_as_utc_midnight(
    client: httpx.AsyncClient, db: asyncpg.Connection, buyer: Account
) -> None:
    day = {d: await charge(db, buyer.id, cost_micro=0, created_at=T0 + timedelta(days=d)) for d in range(4)}
    params = {"since": "2024-03-11", "until": "2024-03-13"}
    rows = (await client.get("/api/billing/usage", params=params, headers=buyer.auth)).json()["data"]
    assert [r["request_id"] for r in rows] == [day[2], day[1]]


async def test_usage_times_with_an_offset_are_compared_in_utc(
    client: httpx.AsyncClient, db: asyncpg.Connection, buyer: Account
) -> None:
    await charge(db, buyer.id, cost_micro=0, created_at=T0)
    at_noon_utc = {"since": "2024-03-10T13:00:00+01:00"}
    after_noon = {"since": "2024-03-10T13:00:01+01:00"}
    assert len((await client.get("/api/billing/usage", params=at_noon_utc, headers=buyer.auth)).json()["data"]) == 1
    assert (await client.get("/api/billing/usage", params=after_noon, headers=buyer.auth)).json()["data"] == []


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("since", "yesterday"),
        ("since", "2024-13-01"),
        ("until", "2024-03-10T25:00:00Z"),
        ("until", ""),
        ("key_id", "not-a-uuid"),
        ("since", "9999-12-31T23:59:59-05:00"),
        ("until", "0001-01-01T00:00:00+05:00"),
        # Outside 1970..2199 UTC, or not the ISO 8601 forms the API documents:
        ("since", "0001-01-01"),
        ("until", "9999-12-31"),
        ("since", "1969-12-31T23:59:59Z"),
        ("until", "2200-01-01"),
        ("since", "2024-W10-1"),
        ("since", "20240310"),
        ("until", "2024-03-10T12:00:00+05:00:30"),
        ("until", "2024-03-10T12:00:00 01:00"),  # an unencoded + arrives as a space
    ],
)
async def test_a_malformed_usage_filter_is_refused_naming_it(
    client: httpx.AsyncClient, buyer: Account, param: str, value: str
) -> None:
    answer = await client.get("/api/billing/usage", params={param: value}, headers=buyer.auth)
    assert_error(answer, 400, param)


async def test_usage_pages_walk_rows_of_one_instant_exactly_once_by_request_id(
    client: httpx.AsyncClient, db: asyncpg.Connection, buyer: Account
) -> None:
    tied = [await charge(db, buyer.id, cost_micro=0, request_id=f"tie-{uuid.uuid4().hex}") for _ in range(5)]
    later = await charge(db, buyer.id, cost_micro=0, created_at=T0 + timedelta(microseconds=1))
    earlier = await charge(db, buyer.id, cost_micro=0, created_at=T0 - timedelta(microseconds=1))
    pages = await walk(client, "/api/billing/usage", buyer.auth, limit="2")
    assert [len(page) for page in pages] == [2, 2, 2, 1]
    assert [r["request_id"] for page in pages for r in page] == [later, *sorted(tied, reverse=True), earlier]


async def test_usage_pages_keep_their_filters(
    client: httpx.AsyncClient, db: asyncpg.Connection, buyer: Account
) -> None:
    wanted = {await charge(db, buyer.id, cost_micro=0, model="m-wanted") for _ in range(3)}
    for _ in range(3):
        await charge(db, buyer.id, cost_micro=0, model="m-other")
    pages = await walk(client, "/api/billing/usage", buyer.auth, limit="1", model="m-wanted")
    assert [r["request_id"] for page in pages for r in page] == sorted(wanted, reverse=True)


@pytest.mark.parametrize(
    "cursor",
    [
        "!!!!",
        encode_cursor("12"),  # a transactions cursor
        encode_cursor("not a time", "req-1"),
        encode_cursor(T0.isoformat(), "req-1", "extra"),
        encode_cursor(T0.isoformat(), "req\x00-1"),
        encode_cursor("9999-12-31T23:59:59", "req-1"),  # year 9999
        encode_cursor("0001-01-01", "req-1"),
        encode_cursor(T0.isoformat(), "r" * 257),
        encode_cursor(T0.isoformat(), ""),
    ],
)
async def test_a_tampered_or_foreign_usage_cursor_is_refused_naming_cursor(
    client: httpx.AsyncClient, buyer: Account, cursor: str
) -> None:
    assert_error(await client.get("/api/billing/usage", params={"cursor": cursor}, headers=buyer.auth), 400, "cursor")


async def test_a_model_filter_with_a_nul_is_refused_naming_model(client: httpx.AsyncClient, buyer: Account) -> None:
    answer = await client.get("/api/billing/usage", params={"model": "gpt\x00"}, headers=buyer.auth)
    assert_error(answer, 400, "model")


async def test_another_buyers_usage_never_appears(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection, buyer: Account
) -> None:
    other = await register(client)
    await credit(app, other.id, USD)
    their_key = uuid.uuid4()
    await charge(db, other.id, cost_micro=5, key_id=their_key)
    mine = await charge(db, buyer.id, cost_micro=0)
    assert [r["request_id"] for page in await walk(client, "/api/billing/usage", buyer.auth) for r in page] == [mine]
    by_their_key = await client.get("/api/billing/usage", params={"key_id": str(their_key)}, headers=buyer.auth)
    assert by_their_key.json() == {"data": [], "next_cursor": None}


# ---- admin credits -------------------------------------------------------------------------------


def grant_body(email: str, **overrides: Any) -> dict[str, Any]:
    return {"email": email, "amount_usd": "25.50", "reason": "conference voucher"} | overrides


async def test_a_buyer_may_not_grant_credit(client: httpx.AsyncClient, buyer: Account) -> None:
    answer = await client.post("/api/admin/credits", json=grant_body(buyer.email), headers=buyer.auth)
    error = assert_error(answer, 403, None)
    assert error["type"] == "permission_error"


async def test_granting_credit_needs_a_session(client: httpx.AsyncClient, buyer: Account) -> None:
    assert_error(await client.post("/api/admin/credits", json=grant_body(buyer.email)), 401, None)


async def test_a_credit_for_an_unknown_email_is_refused_naming_email(client: httpx.AsyncClient, admin: Account) -> None:
    body = grant_body(f"nobody-{uuid.uuid4().hex[:8]}@example.com")
    assert_error(await client.post("/api/admin/credits", json=body, headers=admin.auth), 404, "email")


@pytest.mark.parametrize("email", [None, 42, "no-at-sign"])
async def test_a_credit_without_an_email_address_is_refused_naming_email(
    client: httpx.AsyncClient, admin: Account, email: object
) -> None:
    body = grant_body("x@example.com") | {"email": email}
    assert_error(await client.post("/api/admin/credits", json=body, headers=admin.auth), 400, "email")


@pytest.mark.parametrize("amount", ["0", "-1", 1.5, 25, "1e3", "1.0000001", "", " 1", None, "1000000.000001"])
async def test_a_credit_amount_that_is_not_a_positive_decimal_string_is_refused_naming_amount_usd(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, buyer: Account, amount: object
) -> None:
    body = grant_body(buyer.email, amount_usd=amount)
    assert_error(await client.post("/api/admin/credits", json=body, headers=admin.auth), 400, "amount_usd")
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, buyer.id) == 0


@pytest.mark.parametrize("reason", [None, "", "   ", 7, "line\nbreak", "x" * 501])
async def test_a_credit_without_a_printable_reason_is_refused_naming_reason(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, buyer: Account, reason: object
) -> None:
    body = grant_body(buyer.email, reason=reason)
    if reason is None:
        del body["reason"]
    assert_error(await client.post("/api/admin/credits", json=body, headers=admin.auth), 400, "reason")
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, buyer.id) == 0


async def test_a_credit_with_an_unknown_field_is_refused_naming_it(
    client: httpx.AsyncClient, admin: Account, buyer: Account
) -> None:
    body = grant_body(buyer.email, user_id=buyer.id)
    assert_error(await client.post("/api/admin/credits", json=body, headers=admin.auth), 400, "user_id")


@pytest.mark.parametrize("content", [b"not json", b"[]", b'"text"'])
async def test_a_credit_body_that_is_not_a_json_object_is_refused(
    client: httpx.AsyncClient, admin: Account, content: bytes
) -> None:
    headers = admin.auth | {"content-type": "application/json"}
    assert_error(await client.post("/api/admin/credits", content=content, headers=headers), 400, None)


async def test_a_granted_credit_shows_alike_in_the_answer_the_balance_the_ledger_and_the_hot_view(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection, admin: Account, buyer: Account
) -> None:
    await client.get("/api/billing/balance", headers=buyer.auth)  # the hot view is loaded (at zero)
    promotions_before = await ledger.balance_micro(db, ledger.AccountKind.PROMOTIONS)
    answer = await client.post(
        "/api/admin/credits", json=grant_body(buyer.email.upper(), amount_usd="25.50"), headers=admin.auth
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert (body["user_id"], body["amount_usd"], body["balance_usd"], body["replayed"]) == (
        buyer.id,
        "25.500000",
        "25.500000",
        False,
    )
    shown = (await client.get("/api/billing/balance", headers=buyer.auth)).json()
    assert shown == {"balance_usd": "25.500000", "held_usd": "0.000000", "available_usd": "25.500000"}
    view = await app.state.services.hot.view(buyer.id)
    assert view is not None and view.balance_micro == 25_500_000
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, buyer.id) == 25_500_000
    assert await ledger.balance_micro(db, ledger.AccountKind.PROMOTIONS) == promotions_before - 25_500_000


async def test_a_granted_credit_is_one_transfer_from_promotions_with_its_reason_and_granter(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, buyer: Account
) -> None:
    answer = await client.post("/api/admin/credits", json=grant_body(buyer.email, amount_usd="4"), headers=admin.auth)
    transfer_id = int(answer.json()["id"])
    transfer = await db.fetchrow("SELECT kind, memo FROM transfers WHERE id = $1", transfer_id)
    assert transfer["kind"] == "credit"
    assert orjson.loads(transfer["memo"]) == {"reason": "conference voucher", "granted_by": admin.id}
    legs = await db.fetch(
        """SELECT a.kind, a.owner_id, e.amount_micro FROM ledger_entries e
           JOIN ledger_accounts a ON a.id = e.account_id WHERE e.transfer_id = $1 ORDER BY e.amount_micro""",
        transfer_id,
    )
    assert [(leg["kind"], leg["owner_id"], leg["amount_micro"]) for leg in legs] == [
        ("promotions", None, -4 * USD),
        ("buyer", uuid.UUID(buyer.id), 4 * USD),
    ]


async def test_the_buyer_sees_the_granted_credit_and_its_reason_in_transactions(
    client: httpx.AsyncClient, admin: Account, buyer: Account
) -> None:
    await client.post("/api/admin/credits", json=grant_body(buyer.email, amount_usd="4"), headers=admin.auth)
    [entry] = (await client.get("/api/billing/transactions", headers=buyer.auth)).json()["data"]
    assert (entry["type"], entry["amount_usd"], entry["description"]) == (
        "credit",
        "4.000000",
        "credit: conference voucher",
    )


async def test_the_same_idempotency_key_twice_posts_once_and_the_second_answer_says_replayed(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection, admin: Account, buyer: Account
) -> None:
    await client.get("/api/billing/balance", headers=buyer.auth)
    headers = admin.auth | {"idempotency-key": f"grant-{uuid.uuid4().hex}"}
    first = await client.post("/api/admin/credits", json=grant_body(buyer.email), headers=headers)
    second = await client.post("/api/admin/credits", json=grant_body(buyer.email), headers=headers)
    assert (first.status_code, second.status_code) == (201, 200), second.text
    assert (first.json()["replayed"], second.json()["replayed"]) == (False, True)
    assert second.json()["balance_usd"] == "25.500000"
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, buyer.id) == 25_500_000
    view = await app.state.services.hot.view(buyer.id)
    assert view is not None and view.balance_micro == 25_500_000
    credits = await db.fetchval(
        """SELECT count(*) FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
           WHERE a.kind = 'buyer' AND a.owner_id = $1""",
        uuid.UUID(buyer.id),
    )
    assert credits == 1


async def test_a_replay_answers_the_original_credits_id(
    client: httpx.AsyncClient, admin: Account, buyer: Account
) -> None:
    headers = admin.auth | {"idempotency-key": f"grant-{uuid.uuid4().hex}"}
    first = await client.post("/api/admin/credits", json=grant_body(buyer.email), headers=headers)
    second = await client.post("/api/admin/credits", json=grant_body(buyer.email), headers=headers)
    assert second.json()["id"] == first.json()["id"]


async def test_an_idempotency_key_reused_for_another_credit_is_a_conflict_and_posts_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, buyer: Account
) -> None:
    headers = admin.auth | {"idempotency-key": f"grant-{uuid.uuid4().hex}"}
    await client.post("/api/admin/credits", json=grant_body(buyer.email, amount_usd="1"), headers=headers)
    other = await register(client)
    for body in (grant_body(buyer.email, amount_usd="2"), grant_body(other.email, amount_usd="1")):
        answer = await client.post("/api/admin/credits", json=body, headers=headers)
        assert_error(answer, 409, "Idempotency-Key")
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, buyer.id) == USD
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, other.id) == 0


@pytest.mark.parametrize(
    "key",
    [
        "",
        "k" * 256,
        "tab\there",
        secrets.token_urlsafe(6000),  # random: too big for the transfers' unique index even compressed
    ],
)
async def test_an_idempotency_key_that_is_blank_oversized_or_unprintable_is_refused_naming_it(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, buyer: Account, key: str
) -> None:
    headers = admin.auth | {"idempotency-key": key}
    answer = await client.post("/api/admin/credits", json=grant_body(buyer.email), headers=headers)
    assert_error(answer, 400, "Idempotency-Key")
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, buyer.id) == 0


async def test_two_grants_without_an_idempotency_key_are_two_credits(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, buyer: Account
) -> None:
    for _ in range(2):
        answer = await client.post(
            "/api/admin/credits", json=grant_body(buyer.email, amount_usd="1"), headers=admin.auth
        )
        assert answer.status_code == 201, answer.text
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, buyer.id) == 2 * USD


async def test_the_ledger_is_sound_after_credits_usage_and_replays(
    client: httpx.AsyncClient, db: asyncpg.Connection, admin: Account, buyer: Account
) -> None:
    headers = admin.auth | {"idempotency-key": f"grant-{uuid.uuid4().hex}"}
    for _ in range(2):
        await client.post("/api/admin/credits", json=grant_body(buyer.email, amount_usd="3"), headers=headers)
    await charge(db, buyer.id, cost_micro=2_999_999)
    assert await audit(db) == []
