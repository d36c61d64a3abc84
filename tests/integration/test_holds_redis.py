"""Buyer holds against real Redis, as two gateway processes would use them (two pools, one clock).

The clock is injected and passed into Lua, so holds expire and days roll over without sleeping.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import pytest
import redis as redis_sync
from redis.asyncio import Connection, ConnectionPool, Redis

from aichat_gateway.billing.holdplan import buyer_keys, buyer_tag, holders_key, spend_windows
from aichat_gateway.billing.holds import HoldResult, HoldStatus, HotBalances, HotView, KeyCaps
from tests.support.scratch import TEST_REDIS_URL
from tests.support.scratch import redis_prefix as scratch_redis_prefix

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

START = datetime(2024, 5, 31, 23, 58, 0, tzinfo=UTC).timestamp()  # a day and a month boundary ahead
TTL = 60.0


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("hold") as p:  # also removes the `{p:b:<buyer>}:...` keys
        yield p


@pytest.fixture
async def redis_a() -> AsyncIterator[Redis]:
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def redis_b() -> AsyncIterator[Redis]:
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def two(redis_a: Redis, redis_b: Redis, prefix: str, clock: Clock) -> tuple[HotBalances, HotBalances]:
    """Two "gateway processes": separate connection pools, the same Redis and prefix."""
    return HotBalances(redis_a, prefix, clock=clock), HotBalances(redis_b, prefix, clock=clock)


@pytest.fixture
def hot(two: tuple[HotBalances, HotBalances]) -> HotBalances:
    return two[0]


def new_buyer() -> str:
    return str(uuid.uuid4())


async def loaded(hot: HotBalances, balance: int) -> str:
    buyer = new_buyer()
    await hot.load(buyer, balance)
    return buyer


async def hold(
    hot: HotBalances, buyer: str, request: str, amount: int, key: str = "key-1", caps: KeyCaps | None = None
) -> HoldResult:
    return await hot.hold(buyer_id=buyer, request_id=request, amount_micro=amount, key_id=key, ttl_s=TTL, caps=caps)


async def raw_hash(redis: Redis, key: str) -> dict[str, str]:
    stored: dict[bytes, bytes] = await redis.hgetall(key)  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in stored.items()}


# ---- cold, load, hold, short -------------------------------------------------------------------


async def test_a_new_buyer_is_cold_until_loaded_and_then_holds(hot: HotBalances) -> None:
    buyer = new_buyer()
    assert await hold(hot, buyer, "r1", 100) == HoldResult(HoldStatus.COLD, 0)
    assert await hot.view(buyer) is None
    await hot.load(buyer, 1000)
    assert await hold(hot, buyer, "r1", 100) == HoldResult(HoldStatus.OK, 900)
    assert await hot.view(buyer) == HotView(1000, 0, 100)


async def test_loading_a_loaded_buyer_changes_nothing(hot: HotBalances) -> None:
    buyer = await loaded(hot, 1000)
    assert (await hold(hot, buyer, "r1", 300)).ok
    await hot.load(buyer, 5)
    assert await hot.view(buyer) == HotView(1000, 0, 300)


async def test_a_hold_of_exactly_the_available_amount_succeeds_and_one_micro_more_is_short(hot: HotBalances) -> None:
    buyer = await loaded(hot, 1000)
    assert await hold(hot, buyer, "r1", 400) == HoldResult(HoldStatus.OK, 600)
    assert await hold(hot, buyer, "r2", 601) == HoldResult(HoldStatus.SHORT, 600)
    assert await hold(hot, buyer, "r3", 600) == HoldResult(HoldStatus.OK, 0)
    assert await hold(hot, buyer, "r4", 1) == HoldResult(HoldStatus.SHORT, 0)
    assert await hot.view(buyer) == HotView(1000, 0, 1000)


async def test_holding_the_same_request_twice_reserves_once(two: tuple[HotBalances, HotBalances]) -> None:
    buyer = await loaded(two[0], 1000)
    assert await hold(two[0], buyer, "same", 300) == HoldResult(HoldStatus.OK, 700)
    assert await hold(two[1], buyer, "same", 300) == HoldResult(HoldStatus.OK, 700)
    assert await two[0].view(buyer) == HotView(1000, 0, 300)


# ---- settle and void ---------------------------------------------------------------------------


async def test_settle_charges_the_cost_when_it_is_within_the_hold(hot: HotBalances, redis_a: Redis) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "r1", 300)
    assert await hot.settle(buyer_id=buyer, request_id="r1", cost_micro=120) == 120
    assert await hot.view(buyer) == HotView(1000, 120, 0)
    assert await raw_hash(redis_a, buyer_keys(hot._prefix, buyer, spend_windows(0)).unsettled) == {"r1": "120"}


async def test_settle_never_charges_more_than_was_held(hot: HotBalances) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "r1", 300)
    assert await hot.settle(buyer_id=buyer, request_id="r1", cost_micro=450) == 300
    assert await hot.view(buyer) == HotView(1000, 300, 0)


async def test_a_second_settle_changes_nothing_and_answers_minus_one(two: tuple[HotBalances, HotBalances]) -> None:
    buyer = await loaded(two[0], 1000)
    await hold(two[0], buyer, "r1", 300)
    assert await two[0].settle(buyer_id=buyer, request_id="r1", cost_micro=100) == 100
    assert await two[1].settle(buyer_id=buyer, request_id="r1", cost_micro=100) == -1
    assert not await two[1].void(buyer_id=buyer, request_id="r1")
    assert await two[0].view(buyer) == HotView(1000, 100, 0)


async def test_a_void_frees_everything_and_charges_nothing(hot: HotBalances, redis_a: Redis) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "r1", 300, caps=KeyCaps(daily_micro=500))
    assert await hot.void(buyer_id=buyer, request_id="r1")
    assert await hot.view(buyer) == HotView(1000, 0, 0)
    k = buyer_keys(hot._prefix, buyer, spend_windows(int(START * 1000)))
    for key in (k.deadlines, k.holds, k.key_holds, k.unsettled, k.spend_day, k.spend_month):
        assert not await redis_a.exists(key), key
    assert await hold(hot, buyer, "r2", 500, caps=KeyCaps(daily_micro=500)) == HoldResult(HoldStatus.OK, 500)


async def test_an_expired_hold_not_yet_swept_still_settles(hot: HotBalances, clock: Clock) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "slow", 300)
    clock.now += TTL + 5
    assert await hot.settle(buyer_id=buyer, request_id="slow", cost_micro=200) == 200
    assert await hot.view(buyer) == HotView(1000, 200, 0)


# ---- expiry, sweep, renew ----------------------------------------------------------------------


async def test_an_expired_hold_is_dropped_by_the_next_hold_of_the_same_buyer(hot: HotBalances, clock: Clock) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "crashed", 800)
    clock.now += TTL  # the deadline itself: still open
    assert await hold(hot, buyer, "next", 201) == HoldResult(HoldStatus.SHORT, 200)
    clock.now += 0.001
    assert await hold(hot, buyer, "next", 201) == HoldResult(HoldStatus.OK, 799)
    assert await hot.settle(buyer_id=buyer, request_id="crashed", cost_micro=800) == -1
    assert await hot.view(buyer) == HotView(1000, 0, 201)


async def test_sweep_voids_expired_holds_of_buyers_who_send_nothing_more(
    two: tuple[HotBalances, HotBalances], clock: Clock, redis_a: Redis, prefix: str
) -> None:
    idle, busy = await loaded(two[0], 1000), await loaded(two[0], 1000)
    await hold(two[0], idle, "c1", 100)
    await hold(two[1], idle, "c2", 200)
    await hold(two[0], busy, "old", 100)
    clock.now += 30
    await hold(two[1], busy, "young", 50)
    assert await two[0].sweep() == 0  # nothing due yet
    clock.now += TTL - 30 + 0.001
    assert await two[1].sweep() == 3
    assert await two[0].view(idle) == HotView(1000, 0, 0)
    assert await two[0].view(busy) == HotView(1000, 0, 50)
    remaining = await redis_a.zrange(holders_key(prefix), 0, -1, withscores=True)
    assert remaining == [(busy.encode(), (START + 30 + TTL) * 1000)]  # re-scored to its open hold
    assert await two[0].sweep() == 0


async def test_sweep_forgets_buyers_whose_holds_were_all_resolved(
    hot: HotBalances, clock: Clock, redis_a: Redis, prefix: str
) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "r1", 100)
    assert await hot.settle(buyer_id=buyer, request_id="r1", cost_micro=10) == 10
    clock.now += TTL + 1
    assert await hot.sweep() == 0
    assert await redis_a.zcard(holders_key(prefix)) == 0


async def test_sweep_takes_at_most_limit_buyers_at_a_time(hot: HotBalances, clock: Clock) -> None:
    buyers = [await loaded(hot, 1000) for _ in range(3)]
    for buyer in buyers:
        await hold(hot, buyer, "r", 10)
    clock.now += TTL + 1
    assert await hot.sweep(limit=2) == 2
    assert await hot.sweep(limit=2) == 1


async def test_a_renewed_hold_outlives_its_first_deadline(two: tuple[HotBalances, HotBalances], clock: Clock) -> None:
    buyer = await loaded(two[0], 1000)
    await hold(two[0], buyer, "stream", 900)
    clock.now += 50
    assert await two[0].renew(buyer_id=buyer, request_id="stream", ttl_s=TTL)
    clock.now += 50  # past the first deadline, inside the renewed one
    assert (await hold(two[1], buyer, "other", 200)).status is HoldStatus.SHORT
    assert await two[1].sweep() == 0
    assert await two[0].settle(buyer_id=buyer, request_id="stream", cost_micro=700) == 700
    assert not await two[0].renew(buyer_id=buyer, request_id="stream", ttl_s=TTL)  # resolved holds stay resolved


async def test_a_renew_never_shortens_a_hold(hot: HotBalances, clock: Clock) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "r1", 900)
    assert await hot.renew(buyer_id=buyer, request_id="r1", ttl_s=1.0)
    clock.now += TTL
    assert (await hold(hot, buyer, "r2", 200)).status is HoldStatus.SHORT


# ---- applied, credit ---------------------------------------------------------------------------


async def test_applied_moves_unsettled_charges_into_the_balance_once(hot: HotBalances) -> None:
    buyer = await loaded(hot, 1000)
    for request, cost in (("r1", 100), ("r2", 250), ("r3", 40)):
        await hold(hot, buyer, request, 300)
        await hot.settle(buyer_id=buyer, request_id=request, cost_micro=cost)
    assert await hot.view(buyer) == HotView(1000, 390, 0)
    await hot.applied([(buyer, "r1"), (buyer, "r2"), (buyer, "r1")])
    assert await hot.view(buyer) == HotView(650, 40, 0)
    await hot.applied([(buyer, "r1"), (buyer, "r2")])  # re-delivered after a crash
    assert await hot.view(buyer) == HotView(650, 40, 0)


async def test_applied_handles_many_buyers_in_one_round_trip(prefix: str, clock: Clock) -> None:
    pool = ConnectionPool.from_url(TEST_REDIS_URL, connection_class=CountingConnection)
    redis = Redis(connection_pool=pool)
    try:
        hot = HotBalances(redis, prefix, clock=clock)
        buyers = [await loaded(hot, 100) for _ in range(5)]
        for buyer in buyers:
            await hold(hot, buyer, "r", 10)
            await hot.settle(buyer_id=buyer, request_id="r", cost_micro=10)
        CountingConnection.sends = 0
        await hot.applied([(b, "r") for b in buyers] + [(buyers[0], "never-charged")])
        assert CountingConnection.sends == 1
        assert [await hot.view(b) for b in buyers] == [HotView(90, 0, 0)] * 5
        await hot.applied([])
        assert CountingConnection.sends == 6  # the five views, and nothing for an empty batch
    finally:
        await redis.aclose()
        await pool.aclose()


async def test_a_credit_raises_the_balance_and_a_refund_lowers_it_below_zero(hot: HotBalances) -> None:
    buyer = await loaded(hot, 1000)
    await hot.credit(buyer, 500)
    assert await hot.view(buyer) == HotView(1500, 0, 0)
    await hot.credit(buyer, -1800)
    assert await hot.view(buyer) == HotView(-300, 0, 0)
    assert await hold(hot, buyer, "r1", 0) == HoldResult(HoldStatus.SHORT, -300)


async def test_a_credit_to_a_cold_buyer_leaves_it_cold(hot: HotBalances) -> None:
    buyer = new_buyer()
    await hot.credit(buyer, 500)
    assert await hot.view(buyer) is None


# ---- reconcile ---------------------------------------------------------------------------------


async def test_reconcile_of_a_clean_view_reports_nothing(hot: HotBalances) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "r1", 300)
    await hold(hot, buyer, "r2", 100)
    await hot.settle(buyer_id=buyer, request_id="r2", cost_micro=60)
    assert await hot.reconcile(buyer, 1000) is None
    assert await hot.view(buyer) == HotView(1000, 60, 300)


async def test_reconcile_of_a_cold_buyer_reports_nothing_and_stays_cold(hot: HotBalances) -> None:
    buyer = new_buyer()
    assert await hot.reconcile(buyer, 1000) is None
    assert await hot.view(buyer) is None


async def test_reconcile_repairs_a_tampered_balance_unsettled_and_held(hot: HotBalances, redis_a: Redis) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "r1", 300)
    await hold(hot, buyer, "r2", 100)
    await hot.settle(buyer_id=buyer, request_id="r2", cost_micro=60)
    k = buyer_keys(hot._prefix, buyer, spend_windows(0))
    await redis_a.hset(k.view, mapping={"bal": 5, "uns": 999, "held": 7})
    repair = await hot.reconcile(buyer, 940)
    assert repair is not None
    assert repair.changes() == {"balance_micro": (5, 940), "unsettled_micro": (999, 60), "held_micro": (7, 300)}
    assert not repair.key_holds_fixed
    assert await hot.view(buyer) == HotView(940, 60, 300)
    assert await hot.reconcile(buyer, 940) is None


async def test_reconcile_drops_expired_holds_without_calling_that_drift(hot: HotBalances, clock: Clock) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "crashed", 300)
    clock.now += TTL + 1
    assert await hot.reconcile(buyer, 1000) is None
    assert await hot.view(buyer) == HotView(1000, 0, 0)


async def test_reconcile_rebuilds_the_per_key_hold_sums_that_key_caps_use(hot: HotBalances, redis_a: Redis) -> None:
    buyer = await loaded(hot, 1000)
    caps = KeyCaps(daily_micro=500)
    await hold(hot, buyer, "r1", 200, key="k1", caps=caps)
    k = buyer_keys(hot._prefix, buyer, spend_windows(0))
    await redis_a.hset(k.key_holds, mapping={"k1": 500, "ghost": 3})
    assert (await hold(hot, buyer, "r2", 1, key="k1", caps=caps)).status is HoldStatus.KEY_DAILY_CAP
    repair = await hot.reconcile(buyer, 1000)
    assert repair is not None and repair.key_holds_fixed and repair.changes() == {}
    assert await raw_hash(redis_a, k.key_holds) == {"k1": "200"}
    assert (await hold(hot, buyer, "r2", 300, key="k1", caps=caps)).ok


async def test_reconcile_drops_debris_deadlines_and_hold_records_that_lost_their_other_half(
    hot: HotBalances, redis_a: Redis
) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "real", 100)
    k = buyer_keys(hot._prefix, buyer, spend_windows(0))
    await redis_a.zadd(k.deadlines, {"no-record": (START + TTL) * 1000})
    await redis_a.hset(k.holds, "no-deadline", "400:key-1")
    repair = await hot.reconcile(buyer, 1000)
    assert repair is None  # the stored figures were right all along
    assert await redis_a.zrange(k.deadlines, 0, -1) == [b"real"]
    assert await raw_hash(redis_a, k.holds) == {"real": "100:key-1"}


async def test_a_view_lost_on_its_own_is_rebuilt_from_the_records_by_load(hot: HotBalances, redis_a: Redis) -> None:
    buyer = await loaded(hot, 1000)
    await hold(hot, buyer, "open", 300)
    await hold(hot, buyer, "done", 200)
    await redis_a.delete(buyer_keys(hot._prefix, buyer, spend_windows(0)).view)
    assert await hot.settle(buyer_id=buyer, request_id="done", cost_micro=150) == 150  # records only
    assert (await hold(hot, buyer, "next", 1)).status is HoldStatus.COLD
    await hot.load(buyer, 900)
    assert await hot.view(buyer) == HotView(900, 150, 300)


# ---- key caps ----------------------------------------------------------------------------------


async def test_a_key_daily_cap_refuses_at_the_edge_and_resets_the_next_utc_day(
    two: tuple[HotBalances, HotBalances], clock: Clock
) -> None:
    buyer = await loaded(two[0], 10_000)
    caps = KeyCaps(daily_micro=1000)
    await hold(two[0], buyer, "spent", 700, caps=caps)
    await two[0].settle(buyer_id=buyer, request_id="spent", cost_micro=600)  # 600 spent today
    await hold(two[1], buyer, "open", 300, caps=caps)  # 900 committed
    assert await hold(two[0], buyer, "edge+1", 101, caps=caps) == HoldResult(HoldStatus.KEY_DAILY_CAP, 9100)
    assert (await hold(two[0], buyer, "other-key", 5000, key="key-2")).ok  # caps are per key
    assert (await hold(two[0], buyer, "edge", 100, caps=caps)).ok
    await two[1].void(buyer_id=buyer, request_id="open")
    await two[1].void(buyer_id=buyer, request_id="edge")
    clock.now = START + 119.999  # 2024-05-31 23:59:59.999
    assert (await hold(two[0], buyer, "late", 401, caps=caps)).status is HoldStatus.KEY_DAILY_CAP
    clock.now = START + 120  # 2024-06-01 00:00:00
    assert (await hold(two[1], buyer, "tomorrow", 1000, caps=caps)).ok


async def test_a_key_monthly_cap_refuses_at_the_edge_and_resets_the_next_utc_month(
    hot: HotBalances, clock: Clock
) -> None:
    buyer = await loaded(hot, 10_000)
    caps = KeyCaps(daily_micro=5000, monthly_micro=1500)
    await hold(hot, buyer, "a", 1000, caps=caps)
    await hot.settle(buyer_id=buyer, request_id="a", cost_micro=1000)
    assert (await hold(hot, buyer, "b", 501, caps=caps)).status is HoldStatus.KEY_MONTHLY_CAP
    assert (await hold(hot, buyer, "b", 500, caps=caps)).ok
    await hot.void(buyer_id=buyer, request_id="b")
    clock.now = START + 120  # a new day and a new month
    assert (await hold(hot, buyer, "c", 1500, caps=caps)).ok


async def test_spend_counters_expire_a_little_after_their_window(hot: HotBalances, redis_a: Redis) -> None:
    buyer = await loaded(hot, 10_000)
    await hold(hot, buyer, "r", 100, caps=KeyCaps(daily_micro=1000))
    await hot.settle(buyer_id=buyer, request_id="r", cost_micro=100)
    k = buyer_keys(hot._prefix, buyer, spend_windows(int(START * 1000)))
    assert 0 < await redis_a.pttl(k.spend_day) <= 120_000 + 60_000
    assert 0 < await redis_a.pttl(k.spend_month) <= 120_000 + 60_000
    assert await redis_a.pttl(k.view) == -1  # the money view itself never expires


# ---- concurrency -------------------------------------------------------------------------------


async def test_a_balance_for_exactly_n_holds_admits_exactly_n_of_ten_times_as_many_concurrent(
    two: tuple[HotBalances, HotBalances],
) -> None:
    n, amount = 20, 1234
    buyer = await loaded(two[0], n * amount)
    results = await asyncio.gather(*(hold(two[i % 2], buyer, f"req-{i}", amount) for i in range(10 * n)))
    assert sum(r.ok for r in results) == n
    assert {r.status for r in results if not r.ok} == {HoldStatus.SHORT}
    assert await two[1].view(buyer) == HotView(n * amount, 0, n * amount)


async def test_a_key_cap_admits_exactly_what_fits_under_concurrency(two: tuple[HotBalances, HotBalances]) -> None:
    buyer = await loaded(two[0], 10**9)
    caps = KeyCaps(daily_micro=10_000)
    results = await asyncio.gather(*(hold(two[i % 2], buyer, f"req-{i}", 300, caps=caps) for i in range(100)))
    assert sum(r.ok for r in results) == 33


# ---- pipelines, round trips, NOSCRIPT ----------------------------------------------------------


class CountingConnection(Connection):
    """Counts packed writes: one per pipeline execute, i.e. one per round trip."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        await super().send_packed_command(command, check_health)


async def test_a_hold_rides_in_someone_elses_pipeline_in_one_round_trip(prefix: str, clock: Clock) -> None:
    pool = ConnectionPool.from_url(TEST_REDIS_URL, connection_class=CountingConnection)
    redis = Redis(connection_pool=pool)
    try:
        hot = HotBalances(redis, prefix, clock=clock)
        buyer = await loaded(hot, 1000)  # also loads a script and opens the connection
        await hold(hot, buyer, "warm-up", 1)
        CountingConnection.sends = 0
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{prefix}:other-slot", "capacity take stands in here")
            held = hot.hold_in(pipe, buyer_id=buyer, request_id="r1", amount_micro=100, key_id="k", ttl_s=TTL)
            pipe.get(f"{prefix}:other-slot")
            results = await pipe.execute(raise_on_error=False)
        assert await held.resolve(results) == HoldResult(HoldStatus.OK, 899)
        assert results[-1] == b"capacity take stands in here"
        assert CountingConnection.sends == 1
        async with redis.pipeline(transaction=False) as pipe:
            renewed = hot.renew_in(pipe, buyer_id=buyer, request_id="r1", ttl_s=TTL)
            settled = hot.settle_in(pipe, buyer_id=buyer, request_id="r1", cost_micro=40)
            voided = hot.void_in(pipe, buyer_id=buyer, request_id="r1")  # order matters: settled first
            results = await pipe.execute(raise_on_error=False)
        assert (await renewed.resolve(results), await settled.resolve(results), await voided.resolve(results)) == (
            True,
            40,
            False,
        )
        assert CountingConnection.sends == 2
    finally:
        await redis.aclose()
        await pool.aclose()


async def test_scripts_survive_a_flushed_script_cache(
    two: tuple[HotBalances, HotBalances], redis_a: Redis, prefix: str
) -> None:
    buyer = await loaded(two[0], 1000)
    await hold(two[0], buyer, "a", 100)
    await redis_a.script_flush("SYNC")  # what a Redis restart does
    async with redis_a.pipeline(transaction=False) as pipe:
        pipe.set(f"{prefix}:neighbour", "1")
        pending = two[0].hold_in(pipe, buyer_id=buyer, request_id="b", amount_micro=100, key_id="k", ttl_s=TTL)
        results = await pipe.execute(raise_on_error=False)
    assert results[0] is True  # the neighbour's command was not lost
    assert await pending.resolve(results) == HoldResult(HoldStatus.OK, 800)
    assert await redis_a.script_exists(two[0]._take.sha) == [True]  # the fallback cached it again
    steps: list[Callable[[], Awaitable[object]]] = [
        lambda: two[1].settle(buyer_id=buyer, request_id="a", cost_micro=30),
        lambda: two[1].renew(buyer_id=buyer, request_id="b", ttl_s=TTL),
        lambda: two[1].void(buyer_id=buyer, request_id="b"),
        lambda: two[1].credit(buyer, 10),
        lambda: two[1].applied([(buyer, "a")]),
        lambda: two[1].reconcile(buyer, 980),
        lambda: two[1].sweep(),
        lambda: two[1].load(new_buyer(), 1),
    ]
    for step in steps:
        await redis_a.script_flush("SYNC")
        await step()
    assert await two[0].view(buyer) == HotView(980, 0, 0)


async def test_other_script_errors_are_raised_not_swallowed(hot: HotBalances, redis_a: Redis) -> None:
    buyer = new_buyer()
    await redis_a.set(buyer_keys(hot._prefix, buyer, spend_windows(0)).view, "not a hash")
    with pytest.raises(redis_sync.ResponseError):
        await hold(hot, buyer, "r", 1)


async def test_a_broken_holders_index_is_raised_not_swallowed(hot: HotBalances, redis_a: Redis, prefix: str) -> None:
    buyer = await loaded(hot, 1000)
    await redis_a.set(holders_key(prefix), "not a zset")
    with pytest.raises(redis_sync.ResponseError):
        await hold(hot, buyer, "r", 1)


# ---- Redis Cluster readiness -------------------------------------------------------------------

LUA_DIR = files("aichat_gateway.billing").joinpath("lua")
KEYED_CALL = re.compile(r"redis\.call\('([A-Z]+)',\s*([^,)]+)")


def test_every_redis_call_in_the_hold_scripts_names_a_declared_key() -> None:
    scripts = [p for p in LUA_DIR.iterdir() if p.name.startswith("hold_") and p.name.endswith(".lua")]
    assert len(scripts) == 8
    for script in scripts:
        calls = KEYED_CALL.findall(script.read_text("utf-8"))
        assert calls, script.name
        for command, key in calls:
            assert key.startswith("KEYS["), f"{script.name}: {command} {key}"


async def test_every_key_a_script_touches_carries_the_buyers_hash_tag(
    two: tuple[HotBalances, HotBalances], clock: Clock, prefix: str
) -> None:
    """MONITOR logs each EVALSHA, then the commands its script ran (atomically, so nothing of
    anyone else's comes between): every such command of ours must name a key in the buyer's tag."""
    hot, buyer = two[0], new_buyer()
    tag = buyer_tag(prefix, buyer)
    marker = f"end-of-{uuid.uuid4().hex}"
    monitor_client = Redis.from_url(TEST_REDIS_URL)
    seen: list[tuple[str, list[str]]] = []  # (our script's sha, the commands it ran)
    try:
        async with monitor_client.monitor() as monitor:
            await hold(hot, buyer, "r0", 1)  # cold
            await hot.load(buyer, 10_000)
            await hold(hot, buyer, "r1", 300, caps=KeyCaps(1000, 2000))
            await hold(hot, buyer, "r2", 300)
            await hot.renew(buyer_id=buyer, request_id="r1", ttl_s=TTL)
            await hot.settle(buyer_id=buyer, request_id="r1", cost_micro=100)
            clock.now += TTL + 1
            await hold(hot, buyer, "r3", 1)  # drops r2 on the way
            await hot.void(buyer_id=buyer, request_id="r3")
            await hot.credit(buyer, 5)
            await hot.reconcile(buyer, 1)
            await hot.applied([(buyer, "r1")])
            await hold(hot, buyer, "r4", 0)
            clock.now += TTL + 1
            await hot.sweep()
            await two[1]._redis.echo(marker)
            current: list[str] | None = None
            while True:
                entry = await monitor.next_command()
                words = entry["command"].split(" ")
                if entry["client_type"] == "lua":
                    if current is not None:
                        current.append(entry["command"])
                    continue
                if marker in entry["command"]:
                    break
                current = None
                if words[0].upper() == "EVALSHA" and prefix in entry["command"]:
                    declared = words[3 : 3 + int(words[2])]
                    assert all(k.startswith(tag) for k in declared), declared
                    current = []
                    seen.append((words[1], current))
                elif words[0].upper() == "EVAL" and prefix in entry["command"]:  # after someone's SCRIPT FLUSH
                    current = []
                    seen.append(("EVAL", current))
    finally:
        await monitor_client.aclose()
    assert len([commands for _, commands in seen if commands]) == 13  # every call above ran its script
    touched = [command for _, commands in seen for command in commands]
    for command in touched:
        assert command.split(" ")[1].startswith(tag), command


async def test_a_swept_hold_is_charged_late_once_as_an_unsettled_charge(redis_a: Redis, prefix: str) -> None:
    """A request that outlived its hold was still served: its charge is recorded as unsettled (so
    settlement's `applied` and the reconciler both see it), once, capped by what it held."""
    clock = Clock()
    hot = HotBalances(redis_a, prefix, clock=clock)
    await hot.load("B", 1_000)
    assert (await hot.hold(buyer_id="B", request_id="r1", amount_micro=300, key_id="k", ttl_s=1)).ok
    clock.now += 5
    await hot.sweep()
    assert await hot.settle(buyer_id="B", request_id="r1", cost_micro=200) == -1  # no late charge asked
    pipe = redis_a.pipeline(transaction=False)
    late = hot.settle_in(pipe, buyer_id="B", request_id="r1", cost_micro=200, late_cap_micro=300)
    again = hot.settle_in(pipe, buyer_id="B", request_id="r1", cost_micro=200, late_cap_micro=300)
    results = await pipe.execute(raise_on_error=False)
    assert (await late.resolve(results), await again.resolve(results)) == (200, -1)
    view = await hot.view("B")
    assert view is not None and (view.unsettled_micro, view.held_micro) == (200, 0)
    assert await hot.reconcile("B", 1_000) is None  # the record backs it: nothing to "repair"
    await hot.applied([("B", "r1")])
    view = await hot.view("B")
    assert view is not None and (view.balance_micro, view.unsettled_micro) == (800, 0)
