"""The ledger against a real Postgres: posting, idempotency, refusals and concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from aichat_gateway.billing.errors import LedgerError
from aichat_gateway.billing.ledger import AccountKind, account_id, balance_micro, lock_accounts, post
from tests.support.scratch import migrated_database

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database("ledger") as url:
        yield url


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


async def new_user(conn: asyncpg.Connection) -> uuid.UUID:
    user: uuid.UUID = await conn.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", f"{uuid.uuid4().hex}@example.com"
    )
    return user


async def counts(conn: asyncpg.Connection) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM transfers) AS t, (SELECT count(*) FROM ledger_entries) AS e"
    )
    assert row is not None
    return int(row["t"]), int(row["e"])


async def test_a_top_up_moves_money_from_clearing_to_the_buyer(conn: asyncpg.Connection) -> None:
    buyer = await new_user(conn)
    clearing = await account_id(conn, AccountKind.STRIPE_CLEARING)
    wallet = await account_id(conn, AccountKind.BUYER, buyer)
    before = await balance_micro(conn, AccountKind.STRIPE_CLEARING)
    async with conn.transaction():
        transfer = await post(
            conn,
            idempotency_key=f"topup:{uuid.uuid4()}",
            kind="topup",
            legs=[(clearing, -5_000_000), (wallet, 5_000_000)],
        )
    assert transfer is not None
    assert await balance_micro(conn, AccountKind.BUYER, buyer) == 5_000_000
    assert await balance_micro(conn, AccountKind.STRIPE_CLEARING) == before - 5_000_000
    entries = await conn.fetch(
        "SELECT account_id, amount_micro, balance_after_micro FROM ledger_entries WHERE transfer_id = $1 ORDER BY id",
        transfer,
    )
    assert [tuple(e) for e in entries] == [(clearing, -5_000_000, before - 5_000_000), (wallet, 5_000_000, 5_000_000)]


async def test_account_id_returns_the_same_account_for_the_same_owner(conn: asyncpg.Connection) -> None:
    buyer = await new_user(conn)
    first = await account_id(conn, AccountKind.BUYER, buyer)
    assert await account_id(conn, AccountKind.BUYER, str(buyer)) == first
    assert await account_id(conn, AccountKind.SELLER, buyer) != first
    assert await account_id(conn, AccountKind.PLATFORM) == await account_id(conn, AccountKind.PLATFORM)


async def test_concurrent_account_creation_yields_one_account(dsn: str, conn: asyncpg.Connection) -> None:
    buyer = await new_user(conn)
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8)
    try:

        async def create() -> int:
            async with pool.acquire() as c:
                return await account_id(c, AccountKind.BUYER, buyer)

        ids = await asyncio.gather(*(create() for _ in range(16)))
    finally:
        await pool.close()
    assert len(set(ids)) == 1


async def test_a_system_account_with_an_owner_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(LedgerError):
        await account_id(conn, AccountKind.PLATFORM, uuid.uuid4())


async def test_a_buyer_account_without_an_owner_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(LedgerError):
        await account_id(conn, AccountKind.BUYER)


async def test_the_balance_of_an_account_never_created_is_zero(conn: asyncpg.Connection) -> None:
    assert await balance_micro(conn, AccountKind.SELLER, uuid.uuid4()) == 0


async def test_a_replayed_key_posts_nothing_and_returns_none(conn: asyncpg.Connection) -> None:
    buyer = await new_user(conn)
    promotions = await account_id(conn, AccountKind.PROMOTIONS)
    wallet = await account_id(conn, AccountKind.BUYER, buyer)
    key = f"credit:{uuid.uuid4()}"
    async with conn.transaction():
        first = await post(conn, idempotency_key=key, kind="credit", legs=[(promotions, -700), (wallet, 700)])
    before = await counts(conn)
    async with conn.transaction():
        again = await post(conn, idempotency_key=key, kind="credit", legs=[(promotions, -900), (wallet, 900)])
    assert first is not None and again is None
    assert await counts(conn) == before
    assert await balance_micro(conn, AccountKind.BUYER, buyer) == 700


async def test_legs_that_do_not_sum_to_zero_are_refused_with_nothing_written(conn: asyncpg.Connection) -> None:
    buyer = await new_user(conn)
    clearing = await account_id(conn, AccountKind.STRIPE_CLEARING)
    wallet = await account_id(conn, AccountKind.BUYER, buyer)
    before = await counts(conn)
    with pytest.raises(LedgerError, match="sum"):
        async with conn.transaction():
            await post(conn, idempotency_key=f"k:{uuid.uuid4()}", kind="topup", legs=[(clearing, -10), (wallet, 11)])
    assert await counts(conn) == before
    assert await balance_micro(conn, AccountKind.BUYER, buyer) == 0


@pytest.mark.parametrize(
    "legs",
    [[], [(1, 0), (2, 0)], [(1, 5)], [(1, True), (2, -1)]],
    ids=["no legs", "zero legs", "one leg", "a bool amount"],
)
async def test_malformed_legs_are_refused(conn: asyncpg.Connection, legs: list[tuple[int, int]]) -> None:
    async with conn.transaction():
        with pytest.raises(LedgerError):
            await post(conn, idempotency_key=f"k:{uuid.uuid4()}", kind="adjustment", legs=legs)


async def test_an_unknown_transfer_kind_is_refused(conn: asyncpg.Connection) -> None:
    async with conn.transaction():
        with pytest.raises(LedgerError, match="kind"):
            await post(conn, idempotency_key=f"k:{uuid.uuid4()}", kind="gift", legs=[(1, 1), (2, -1)])


async def test_a_leg_on_an_unknown_account_is_refused_with_nothing_written(conn: asyncpg.Connection) -> None:
    clearing = await account_id(conn, AccountKind.STRIPE_CLEARING)
    before = await counts(conn)
    with pytest.raises(LedgerError, match="no ledger account"):
        async with conn.transaction():
            await post(conn, idempotency_key=f"k:{uuid.uuid4()}", kind="topup", legs=[(clearing, -1), (10**12, 1)])
    assert await counts(conn) == before


async def test_posting_outside_a_transaction_is_refused(conn: asyncpg.Connection) -> None:
    clearing = await account_id(conn, AccountKind.STRIPE_CLEARING)
    promotions = await account_id(conn, AccountKind.PROMOTIONS)
    before = await counts(conn)
    with pytest.raises(LedgerError, match="transaction"):
        await post(conn, idempotency_key=f"k:{uuid.uuid4()}", kind="adjustment", legs=[(clearing, -1), (promotions, 1)])
    assert await counts(conn) == before


async def test_several_legs_on_one_account_apply_in_order(conn: asyncpg.Connection) -> None:
    buyer, seller = await new_user(conn), await new_user(conn)
    wallet = await account_id(conn, AccountKind.BUYER, buyer)
    earnings = await account_id(conn, AccountKind.SELLER, seller)
    async with conn.transaction():
        transfer = await post(
            conn,
            idempotency_key=f"k:{uuid.uuid4()}",
            kind="adjustment",
            legs=[(wallet, 30), (earnings, -30), (wallet, -10), (earnings, 10)],
        )
    rows = await conn.fetch(
        "SELECT account_id, balance_after_micro FROM ledger_entries WHERE transfer_id = $1 ORDER BY id", transfer
    )
    assert [tuple(r) for r in rows] == [(wallet, 30), (earnings, -30), (wallet, 20), (earnings, -20)]
    assert await balance_micro(conn, AccountKind.BUYER, buyer) == 20
    assert await balance_micro(conn, AccountKind.SELLER, seller) == -20


async def test_the_memo_is_stored_as_a_json_object(conn: asyncpg.Connection) -> None:
    clearing = await account_id(conn, AccountKind.STRIPE_CLEARING)
    promotions = await account_id(conn, AccountKind.PROMOTIONS)
    async with conn.transaction():
        transfer = await post(
            conn,
            idempotency_key=f"k:{uuid.uuid4()}",
            kind="adjustment",
            legs=[(clearing, -1), (promotions, 1)],
            memo={"reason": "test", "n": 1},
        )
    assert await conn.fetchval("SELECT memo->>'reason' FROM transfers WHERE id = $1", transfer) == "test"


async def test_lock_accounts_outside_a_transaction_is_refused(conn: asyncpg.Connection) -> None:
    with pytest.raises(LedgerError, match="transaction"):
        await lock_accounts(conn, [1])


async def test_concurrent_transfers_over_shared_accounts_neither_deadlock_nor_lose_money(
    dsn: str, conn: asyncpg.Connection
) -> None:
    users = [await new_user(conn) for _ in range(4)]
    accounts = [await account_id(conn, AccountKind.BUYER, u) for u in users]
    start = {a: await conn.fetchval("SELECT balance_micro FROM ledger_accounts WHERE id = $1", a) for a in accounts}
    # Each transfer touches three of the four accounts; money flows a -> b in even transfers and
    # b -> a in odd ones, whose legs are also listed in reverse, so lock order is post's alone.
    plans: list[list[tuple[int, int]]] = []
    for i in range(40):
        a, b, c = accounts[i % 4], accounts[(i + 1) % 4], accounts[(i + 2) % 4]
        amount = 1_000 + i
        if i % 2 == 0:
            plans.append([(a, -amount), (b, amount - 7), (c, 7)])
        else:
            plans.append([(c, 7), (a, amount - 7), (b, -amount)])
    expected = dict(start)
    for legs in plans:
        for account, amount in legs:
            expected[account] += amount

    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    try:

        async def run(n: int, legs: list[tuple[int, int]]) -> int | None:
            async with pool.acquire() as c, c.transaction():
                return await post(c, idempotency_key=f"race:{users[0]}:{n}", kind="adjustment", legs=legs)

        results = await asyncio.gather(*(run(n, legs) for n, legs in enumerate(plans)))
    finally:
        await pool.close()
    assert all(r is not None for r in results)
    final = {a: await conn.fetchval("SELECT balance_micro FROM ledger_accounts WHERE id = $1", a) for a in accounts}
    assert final == expected
    summed = await conn.fetch(
        "SELECT account_id, sum(amount_micro) AS s FROM ledger_entries WHERE account_id = ANY($1) GROUP BY account_id",
        accounts,
    )
    assert {r["account_id"]: r["s"] for r in summed} == final
