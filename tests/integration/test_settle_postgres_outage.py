"""Postgres goes away for a while: the worker keeps retrying with a bounded backoff, acks nothing
meanwhile, and once Postgres is back every event settles exactly once.

The worker reaches Postgres through tests/support/tcpproxy.py; `cut()` resets its connections and
refuses new ones, as a crashed or unreachable server would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import asyncpg
import pytest
from redis.asyncio import Redis

from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.ledger import AccountKind
from aichat_gateway.billing.settle import GROUP, Settler
from tests.support.scratch import TEST_REDIS_URL, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix
from tests.support.settlekit import (
    FEE,
    FUNDS,
    Expected,
    Recorder,
    append,
    balances,
    funded_buyers,
    mixed_events,
    new_user,
    platform_balance,
    usage_totals,
)
from tests.support.tcpproxy import TcpProxy

# DESIGN.md's outage: long enough for the backoff to reach its 5 s ceiling and stay there.
OUTAGE_SECONDS = 30.0
BACKOFF_CEILING = 5.0

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(OUTAGE_SECONDS + 40)]


@pytest.fixture
def dsn() -> Iterator[str]:
    with migrated_database("settle_outage") as url:
        yield url


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("so") as p:
        yield p


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def proxy(dsn: str) -> AsyncIterator[TcpProxy]:
    started = await TcpProxy.for_url(dsn).start()
    try:
        yield started
    finally:
        await started.close()


class Naps:
    """The worker's sleep: real (the outage is real time), but every delay asked for is kept."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(delay)


async def wait_for(check: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(0.05)


async def test_events_that_arrive_while_postgres_is_down_settle_exactly_once_after_it_returns(
    dsn: str, redis: Redis, prefix: str, proxy: TcpProxy
) -> None:
    direct = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(proxy.url_through(dsn), min_size=1, max_size=2)
    naps = Naps()
    recorder = Recorder(dsn)
    worker = Settler(pool, redis, prefix, FEE, after_commit=recorder, consumer="survivor", block_ms=50, sleep=naps)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        buyers = await funded_buyers(direct, 5)
        sellers = [await new_user(direct) for _ in range(3)]
        before = mixed_events(buyers, sellers, 300)
        during = mixed_events(buyers, sellers, 2_000)

        await append(redis, prefix, before)
        await wait_for(lambda: _backlog_is(worker, 0), 20, "the first events to settle")

        proxy.cut()
        cut_at = time.monotonic()
        await append(redis, prefix, during)
        # The outage lasts its full length; meanwhile the worker must keep trying and fail.
        await wait_for(lambda: _outage_over(cut_at, naps), OUTAGE_SECONDS + 10, "the outage to pass")
        assert not task.done(), "the worker gave up during the outage"
        assert (await usage_totals(direct))[0] == len(before)  # nothing written while cut...
        assert await worker.backlog() == len(during)  # ...and nothing acked
        assert proxy.refused >= 3 and max(naps.delays) == BACKOFF_CEILING

        proxy.restore()
        await wait_for(lambda: _backlog_is(worker, 0), BACKOFF_CEILING + 15, "the backlog to settle after restore")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await pool.close()

    try:
        everything = before + during
        expected = Expected.of(everything)
        assert await usage_totals(direct) == (len(everything), expected.cost, expected.transfers)
        assert await balances(direct, AccountKind.BUYER) == {b: FUNDS + expected.buyer[b] for b in buyers}
        assert await balances(direct, AccountKind.SELLER) == expected.seller
        assert await platform_balance(direct) == expected.platform
        assert await audit(direct) == []
        assert set(recorder.pairs) == {(e.user_id, e.request_id) for e in everything}
        assert all(recorder.visible)
        assert int((await redis.xpending(worker.stream, GROUP))["pending"]) == 0
    finally:
        await direct.close()


async def _backlog_is(worker: Settler, n: int) -> bool:
    return await worker.backlog() == n


async def _outage_over(cut_at: float, naps: Naps) -> bool:
    return time.monotonic() - cut_at >= OUTAGE_SECONDS and len(naps.delays) >= 3


class Instant(Naps):
    """Keeps the delays asked for but returns at once: the backoff's shape, without its wait."""

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


async def test_the_backoff_doubles_to_five_seconds_and_nothing_is_acked_meanwhile(
    dsn: str, redis: Redis, prefix: str, proxy: TcpProxy
) -> None:
    direct = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(proxy.url_through(dsn), min_size=0, max_size=2)
    naps = Instant()
    worker = Settler(pool, redis, prefix, FEE, after_commit=Recorder(), consumer="w", block_ms=10, sleep=naps)
    stop = asyncio.Event()
    try:
        buyers = await funded_buyers(direct, 1)
        await append(redis, prefix, mixed_events(buyers, [await new_user(direct)], 20))
        proxy.cut()
        task = asyncio.create_task(worker.run(stop))
        await wait_for(lambda: _naps_at_least(naps, 9), 20, "nine failed attempts")
        stop.set()
        await asyncio.wait_for(task, 10)

        assert naps.delays[:9] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0]
        assert (await usage_totals(direct))[0] == 0
        assert await worker.backlog() == 20
        assert int((await redis.xpending(worker.stream, GROUP))["pending"]) == 20
    finally:
        await pool.close()
        await direct.close()


async def test_a_worker_waiting_out_an_outage_stops_at_once_when_told(
    dsn: str, redis: Redis, prefix: str, proxy: TcpProxy
) -> None:
    direct = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(proxy.url_through(dsn), min_size=0, max_size=2)
    naps = Naps()
    never = asyncio.Event()

    async def forever(delay: float) -> None:
        naps.delays.append(delay)
        await never.wait()

    worker = Settler(pool, redis, prefix, FEE, after_commit=Recorder(), consumer="w", block_ms=10, sleep=forever)
    stop = asyncio.Event()
    try:
        buyers = await funded_buyers(direct, 1)
        await append(redis, prefix, mixed_events(buyers, [await new_user(direct)], 3))
        proxy.cut()
        task = asyncio.create_task(worker.run(stop))
        await wait_for(lambda: _naps_at_least(naps, 1), 10, "the first failure")

        stop.set()
        await asyncio.wait_for(task, 2)
        assert naps.delays == [0.1]
    finally:
        await pool.close()
        await direct.close()


async def _naps_at_least(naps: Naps, n: int) -> bool:
    return len(naps.delays) >= n
