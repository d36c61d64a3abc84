"""Breakers against real Redis, shared by two "gateway processes" (two pools, one injected clock).

Covers the cross-process semantics (one failure count, exactly one probe, crashed probes), the Lua
script against its pure twin `decide` over random histories, NOSCRIPT recovery, pipelining with
the capacity release, and the pub/sub view.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import ConnectionPool, Redis

from aichat_gateway.marketplace.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    Breakers,
    BreakerState,
    BreakerView,
    Notice,
    Verdict,
    breaker_key,
    decide,
)
from aichat_gateway.marketplace.capacity import Capacity
from tests.support.rediskit import Clock, CountingConnection, delete_tagged
from tests.support.scratch import TEST_REDIS_URL
from tests.support.scratch import redis_prefix as scratch_redis_prefix

T0 = 1_700_000_000.0


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("brk") as p:
        try:
            yield p
        finally:
            delete_tagged(p)


@pytest.fixture
async def clients() -> AsyncIterator[tuple[Redis, Redis]]:
    a, b = Redis.from_url(TEST_REDIS_URL), Redis.from_url(TEST_REDIS_URL)
    try:
        yield a, b
    finally:
        await a.aclose()
        await b.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def two(clients: tuple[Redis, Redis], prefix: str, clock: Clock) -> tuple[Breakers, Breakers]:
    return tuple(  # type: ignore[return-value]
        Breakers(c, prefix, fail_max=3, reset_timeout=30.0, probe_timeout=10.0, clock=clock) for c in clients
    )


def listing() -> str:
    return str(uuid.uuid4())


async def open_breaker(two: tuple[Breakers, Breakers], lid: str) -> None:
    for i in range(3):
        await two[i % 2].record(lid, False)


# ---- cross-process semantics -------------------------------------------------------------------


async def test_failures_from_both_processes_count_toward_one_breaker(two: tuple[Breakers, Breakers]) -> None:
    lid = listing()
    assert (await two[0].record(lid, False)).failures == 1
    assert (await two[1].record(lid, False)).failures == 2
    assert await two[0].allow(lid)
    state = await two[1].record(lid, False)
    assert (state.mode, state.retry_at_ms) == (OPEN, int((T0 + 30) * 1000))
    assert not await two[0].allow(lid)
    assert not await two[1].allow(lid)


async def test_a_success_in_between_resets_the_count(two: tuple[Breakers, Breakers]) -> None:
    lid = listing()
    await two[0].record(lid, False)
    await two[1].record(lid, False)
    assert (await two[0].record(lid, True)).failures == 0
    await two[1].record(lid, False)
    await two[0].record(lid, False)
    assert (await two[0].states([lid]))[lid].mode == CLOSED


async def test_exactly_one_of_200_concurrent_requests_becomes_the_probe(
    two: tuple[Breakers, Breakers], clock: Clock
) -> None:
    lid = listing()
    await open_breaker(two, lid)
    clock.now = T0 + 29.999
    assert not any(await asyncio.gather(*(two[i % 2].allow(lid) for i in range(50))))
    clock.now = T0 + 30.0
    permits = await asyncio.gather(*(two[i % 2].allow(lid) for i in range(200)))
    probes = [p for p in permits if p]
    assert len(probes) == 1 and probes[0].probe is not None
    assert probes[0].state.mode == HALF_OPEN


async def test_the_probes_success_closes_it_for_everyone(two: tuple[Breakers, Breakers], clock: Clock) -> None:
    lid = listing()
    await open_breaker(two, lid)
    clock.now = T0 + 30
    probe = await two[0].allow(lid)
    assert probe.probe is not None
    assert (await two[1].record(lid, True)).mode == HALF_OPEN  # a stale success decides nothing
    assert (await two[0].record(lid, True, probe.probe)).mode == CLOSED
    assert all(await asyncio.gather(*(two[i % 2].allow(lid) for i in range(10))))


async def test_the_probes_failure_reopens_with_a_fresh_timer(two: tuple[Breakers, Breakers], clock: Clock) -> None:
    lid = listing()
    await open_breaker(two, lid)
    clock.now = T0 + 35
    probe = await two[1].allow(lid)
    assert probe.probe is not None
    assert (await two[0].record(lid, False)).mode == HALF_OPEN  # stale
    state = await two[1].record(lid, False, probe.probe)
    assert (state.mode, state.retry_at_ms) == (OPEN, int((T0 + 65) * 1000))
    clock.now = T0 + 64.999
    assert not await two[0].allow(lid)
    clock.now = T0 + 65
    assert (await two[0].allow(lid)).probe is not None


async def test_a_crashed_probes_slot_expires_after_probe_timeout(two: tuple[Breakers, Breakers], clock: Clock) -> None:
    lid = listing()
    await open_breaker(two, lid)
    clock.now = T0 + 30
    crashed = await two[0].allow(lid)
    assert crashed.probe is not None  # ... and that process dies
    clock.now = T0 + 39.999
    assert not await two[1].allow(lid)
    clock.now = T0 + 40
    second = await two[1].allow(lid)
    assert second.probe is not None and second.probe != crashed.probe
    assert (await two[0].record(lid, True, crashed.probe)).mode == HALF_OPEN  # its late answer is stale
    assert (await two[1].record(lid, True, second.probe)).mode == CLOSED


async def test_an_abandoned_probe_lets_the_next_request_probe_at_once(
    two: tuple[Breakers, Breakers], clock: Clock
) -> None:
    lid = listing()
    await open_breaker(two, lid)
    clock.now = T0 + 30
    probe = await two[0].allow(lid)
    assert probe.probe is not None
    assert (await two[0].abandon(lid, probe.probe)).mode == OPEN
    assert (await two[1].allow(lid)).probe is not None


# ---- the Lua twin ------------------------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["allow", "success", "failure", "abandon"]),
        st.sampled_from(["probe", "stale", "none"]),
        # time steps: mostly the boundaries that matter (probe 10 s, reset 30 s), sometimes anything
        st.one_of(st.sampled_from([0, 1, 9_999, 10_000, 29_999, 30_000]), st.integers(0, 40_000)),
        st.integers(min_value=0, max_value=1),
    ),
    min_size=5,
    max_size=50,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=EVENTS)
def test_the_script_and_decide_agree_on_every_step(prefix: str, events: list[tuple[str, str, int, int]]) -> None:
    asyncio.run(replay(prefix, events))


async def replay(prefix: str, events: list[tuple[str, str, int, int]]) -> None:
    clock = Clock(T0)
    issued: list[str] = []

    def new_token() -> str:
        issued.append(f"tok{len(issued)}")
        return issued[-1]

    clients = [Redis.from_url(TEST_REDIS_URL), Redis.from_url(TEST_REDIS_URL)]
    try:
        breakers = [
            Breakers(
                c,
                prefix,
                fail_max=3,
                reset_timeout=30.0,
                probe_timeout=10.0,
                clock=clock,
                new_token=new_token,
            )
            for c in clients
        ]
        lid, model, last_probe = listing(), BreakerState(), ""
        for event, which, step_ms, proc in events:
            clock.now += step_ms / 1000
            now_ms = int(clock.now * 1000)
            b = breakers[proc]
            if event == "allow":
                permit = await b.allow(lid)
                t = decide(model, "allow", now_ms, b.config, issued[-1])
                assert (permit.allowed, permit.probe is not None) == (t.allowed, t.is_probe)
                last_probe = permit.probe or last_probe
                got = permit.state
            else:
                token = {"probe": last_probe, "stale": "stale", "none": ""}[which]
                if event == "abandon":
                    got = await b.abandon(lid, token)
                else:
                    got = await b.record(lid, event == "success", token or None)
                t = decide(model, event, now_ms, b.config, token)
            assert got == t.state, (event, which)
            model = t.state
        assert (await breakers[0].states([lid]))[lid] == model
    finally:
        for client in clients:
            await client.aclose()


# ---- NOSCRIPT and pipelines --------------------------------------------------------------------


async def test_breakers_survive_a_flushed_script_cache(
    two: tuple[Breakers, Breakers], clients: tuple[Redis, Redis]
) -> None:
    lid = listing()
    await two[0].record(lid, False)
    await clients[0].script_flush("SYNC")
    assert (await two[1].record(lid, False)).failures == 2
    await clients[0].script_flush("SYNC")
    assert await two[0].allow(lid)


async def test_record_rides_with_the_capacity_release_in_one_round_trip(prefix: str, clock: Clock) -> None:
    pool = ConnectionPool.from_url(TEST_REDIS_URL, connection_class=CountingConnection)
    redis = Redis(connection_pool=pool)
    try:
        capacity, breakers = Capacity(redis, prefix, clock), Breakers(redis, prefix, fail_max=2, clock=clock)
        lid = listing()
        admission = await capacity.take(lid, {"concurrency": 2}, 100, "r1")
        await breakers.record(lid, True)  # loads both scripts
        assert admission.ticket is not None
        CountingConnection.sends = 0
        async with redis.pipeline(transaction=False) as pipe:
            released = capacity.release_in(pipe, admission.ticket, 40)
            recorded = breakers.record_in(pipe, lid, False)
            results = await pipe.execute(raise_on_error=False)
        assert CountingConnection.sends == 1
        assert await released.resolve(results) is True
        assert (await recorded.resolve(results)).failures == 1
    finally:
        await redis.aclose()
        await pool.aclose()


async def test_a_probe_permit_rides_with_the_capacity_take(two: tuple[Breakers, Breakers], clock: Clock) -> None:
    lid = listing()
    await open_breaker(two, lid)
    clock.now = T0 + 30
    capacity = Capacity(two[0].redis, "unused-" + uuid.uuid4().hex[:6], clock)
    async with two[0].redis.pipeline(transaction=False) as pipe:
        taken = capacity.take_in(pipe, lid, {"rpm": 1}, 10, "r1")
        permitted = two[0].allow_in(pipe, lid)
        results = await pipe.execute(raise_on_error=False)
    admission, permit = await taken.resolve(results), await permitted.resolve(results)
    assert admission.admitted and permit.probe is not None
    assert admission.ticket is not None
    assert await capacity.cancel(admission.ticket)
    delete_tagged(capacity._prefix)


# ---- the in-process view -----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def listening(view: BreakerView) -> AsyncIterator[None]:
    task = asyncio.create_task(view.listen())
    try:
        await asyncio.wait_for(view.subscribed.wait(), 10)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Changes:
    """on_change target: lets a test await the notice it expects, without polling or sleeping."""

    def __init__(self) -> None:
        self.seen: list[Notice] = []
        self.arrived = asyncio.Event()

    def __call__(self, notice: Notice) -> None:
        self.seen.append(notice)
        self.arrived.set()

    async def next(self) -> Notice:
        await asyncio.wait_for(self.arrived.wait(), 10)
        self.arrived.clear()
        return self.seen[-1]


async def test_the_view_hears_another_process_open_probe_and_close_a_breaker(
    two: tuple[Breakers, Breakers], clock: Clock
) -> None:
    lid, changes = listing(), Changes()
    view = BreakerView(two[1], lambda: [lid], clock=clock, on_change=changes)
    async with listening(view):
        assert view.verdict(lid) is Verdict.ROUTE
        await open_breaker((two[0], two[0]), lid)
        assert (await changes.next()).mode == OPEN
        assert view.verdict(lid) is Verdict.SKIP
        clock.now = T0 + 30
        assert view.verdict(lid) is Verdict.PROBE  # by the clock alone: no Redis round trip
        probe = await two[0].allow(lid)
        assert (await changes.next()).mode == HALF_OPEN
        assert view.verdict(lid) is Verdict.SKIP
        assert probe.probe is not None
        await two[0].record(lid, True, probe.probe)
        assert (await changes.next()).mode == CLOSED
        assert view.verdict(lid) is Verdict.ROUTE


async def test_a_view_that_subscribes_late_reads_what_it_missed(two: tuple[Breakers, Breakers], clock: Clock) -> None:
    lid, quiet = listing(), listing()
    await open_breaker(two, lid)
    view = BreakerView(two[1], lambda: [lid, quiet], clock=clock)
    async with listening(view):
        assert view.verdict(lid) is Verdict.SKIP
        assert view.verdict(quiet) is Verdict.ROUTE
        assert set(view.not_closed()) == {lid}


async def test_a_breaker_forgotten_by_redis_is_closed_again_on_refresh(
    two: tuple[Breakers, Breakers], clients: tuple[Redis, Redis], prefix: str, clock: Clock
) -> None:
    lid = listing()
    view = BreakerView(two[0], lambda: [lid], clock=clock)
    await open_breaker(two, lid)
    await view.refresh()
    assert view.verdict(lid) is Verdict.SKIP
    await clients[0].delete(breaker_key(prefix, lid))  # as after a week untouched
    clock.now += 1
    await view.refresh()
    assert view.verdict(lid) is Verdict.ROUTE


async def test_the_view_ignores_what_it_cannot_parse(two: tuple[Breakers, Breakers], clock: Clock) -> None:
    lid, changes = listing(), Changes()
    view = BreakerView(two[1], lambda: [], clock=clock, on_change=changes)
    async with listening(view):
        await two[0].redis.publish(two[0].channel, "garbage")
        await open_breaker((two[0], two[0]), lid)
        assert (await changes.next()).listing_id == lid


async def test_the_listener_stops_cleanly_when_cancelled(two: tuple[Breakers, Breakers]) -> None:
    view = BreakerView(two[0], lambda: [])
    task: asyncio.Task[Any] = asyncio.create_task(view.listen())
    await asyncio.wait_for(view.subscribed.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not view.subscribed.is_set()
