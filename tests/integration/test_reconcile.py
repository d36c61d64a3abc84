"""The reconciler repairs a hot balance that drifted from Postgres, and waits for a writer that is
between its Postgres commit and its Redis update instead of "repairing" a correct view."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from redis.asyncio import Redis

from aichat_gateway.billing import ledger
from aichat_gateway.billing.credits import grant_credit
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.billing.reconcile import Reconciler, balance_writes, buyer_of_view_key
from tests.support.scratch import TEST_REDIS_URL, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database("recon") as url:
        yield url


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("trec") as p:
        yield p


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(TEST_REDIS_URL)
    yield client
    await client.aclose()


async def new_buyer(db: asyncpg.Pool, hot: HotBalances, usd_micro: int) -> str:
    user_id = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", f"{uuid.uuid4().hex}@example.com"
    )
    buyer = str(user_id)
    await grant_credit(
        db,
        user_id=buyer,
        amount_micro=usd_micro,
        reason="test",
        granted_by=None,
        idempotency_key=None,
        on_balance_change=hot.credit,
    )
    await hot.load(buyer, usd_micro)
    return buyer


def test_a_view_key_names_its_buyer() -> None:
    assert buyer_of_view_key("agw", "{agw:b:1234}:view") == "1234"
    assert buyer_of_view_key("agw", "{agw:b:1234}:holds") is None
    assert buyer_of_view_key("agw", "{other:b:1234}:view") is None


async def test_a_clean_view_is_left_alone(db: asyncpg.Pool, redis: Redis, prefix: str) -> None:
    hot = HotBalances(redis, prefix)
    await new_buyer(db, hot, 5_000_000)
    assert await Reconciler(db, redis, prefix, hot).run_once() == []


async def test_a_drifted_balance_is_set_back_to_postgres(
    db: asyncpg.Pool, redis: Redis, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hot = HotBalances(redis, prefix)
    buyer = await new_buyer(db, hot, 5_000_000)
    await hot.credit(buyer, 1_000_000)  # Redis believes in a dollar Postgres never saw
    [repair] = await Reconciler(db, redis, prefix, hot).run_once()
    assert repair.changes() == {"balance_micro": (6_000_000, 5_000_000)}
    view = await hot.view(buyer)
    assert view is not None and view.balance_micro == 5_000_000


async def test_the_reconciler_waits_for_a_writer_between_commit_and_redis(
    db: asyncpg.Pool, redis: Redis, prefix: str
) -> None:
    hot = HotBalances(redis, prefix)
    buyer = await new_buyer(db, hot, 5_000_000)
    committed = asyncio.Event()
    release = asyncio.Event()

    async def slow_credit() -> None:
        async with balance_writes(db) as conn:
            async with conn.transaction():
                buyer_account = await ledger.account_id(conn, ledger.AccountKind.BUYER, buyer)
                promotions = await ledger.account_id(conn, ledger.AccountKind.PROMOTIONS)
                await ledger.post(
                    conn,
                    idempotency_key=f"slow:{buyer}",
                    kind="credit",
                    legs=[(promotions, -1_000_000), (buyer_account, 1_000_000)],
                )
            committed.set()
            await release.wait()  # Postgres has the dollar, Redis not yet
            await hot.credit(buyer, 1_000_000)

    writer = asyncio.create_task(slow_credit())
    await committed.wait()
    reconcile = asyncio.create_task(Reconciler(db, redis, prefix, hot).run_once())
    # Until the reconciler is queued on the lock (Postgres shows a waiting advisory lock).
    while not await db.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"):
        assert not reconcile.done(), "the reconciler did not wait for the writer"
        await asyncio.sleep(0.01)
    release.set()
    await writer
    assert await reconcile == []  # it saw both sides agree: nothing to repair, nothing doubled
    view = await hot.view(buyer)
    assert view is not None and view.balance_micro == 6_000_000
