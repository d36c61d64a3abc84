"""Capacity against real Redis, as two gateway processes would use it (two pools, one clock).

The clock is injected and passed into Lua, so windows roll over and leases expire without sleeping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as redis_sync
from redis.asyncio import ConnectionPool, Redis

from aichat_gateway.marketplace.capacity import Admission, Capacity, Limits, Usage
from tests.support.rediskit import START, Clock, CountingConnection, delete_tagged
from tests.support.scratch import TEST_REDIS_URL
from tests.support.scratch import redis_prefix as scratch_redis_prefix


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("cap") as p:
        try:
            yield p
        finally:
            delete_tagged(p)


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
def two(redis_a: Redis, redis_b: Redis, prefix: str, clock: Clock) -> tuple[Capacity, Capacity]:
    """Two "gateway processes": separate connection pools, the same Redis and prefix."""
    return Capacity(redis_a, prefix, clock, lease=60.0), Capacity(redis_b, prefix, clock, lease=60.0)


def listing() -> str:
    return str(uuid.uuid4())


async def take_many(
    caps: tuple[Capacity, Capacity], listing_id: str, limits: dict[str, int], count: int, tokens: int = 1
) -> list[Admission]:
    return list(
        await asyncio.gather(
            *(caps[i % 2].take(listing_id, limits, tokens, f"req-{i}-{uuid.uuid4().hex[:6]}") for i in range(count))
        )
    )


# ---- exact limits across processes -------------------------------------------------------------


async def test_rpm_admits_exactly_the_limit_across_two_processes(two: tuple[Capacity, Capacity]) -> None:
    lid = listing()
    results = await take_many(two, lid, {"rpm": 50}, 200)
    assert sum(a.admitted for a in results) == 50
    refused = [a for a in results if not a.admitted]
    assert {a.limit for a in refused} == {"rpm"}
    assert {a.retry_after for a in refused} == {60.0}  # START is on a minute boundary
    assert all(a.exhausts_listing for a in refused)
    assert (await two[1].state([lid], {lid: {"rpm": 50}}))[lid].usage.rpm == 50


async def test_tpm_admits_exactly_what_fits(two: tuple[Capacity, Capacity]) -> None:
    lid = listing()
    results = await take_many(two, lid, {"tpm": 10_000}, 200, tokens=300)
    assert sum(a.admitted for a in results) == 33
    assert {a.limit for a in results if not a.admitted} == {"tpm"}


async def test_concurrency_never_admits_more_than_the_limit_without_releases(two: tuple[Capacity, Capacity]) -> None:
    lid = listing()
    results = await take_many(two, lid, {"concurrency": 10}, 200)
    assert sum(a.admitted for a in results) == 10
    busy = [a for a in results if not a.admitted]
    assert {a.limit for a in busy} == {"concurrency"}
    assert not any(a.exhausts_listing for a in busy)
    assert all(0 < (a.retry_after or 0) <= 60.0 for a in busy)  # the lease bound


async def test_at_most_concurrency_requests_are_held_at_once_while_200_come_and_go(
    two: tuple[Capacity, Capacity], redis_a: Redis, prefix: str
) -> None:
    lid, limits = listing(), {"concurrency": 10}
    held = peak = served = 0

    async def one(i: int) -> None:
        nonlocal held, peak, served
        cap = two[i % 2]
        while True:
            admission = await cap.take(lid, limits, 1, f"req-{i}")
            if admission.admitted:
                break
            await asyncio.sleep(0)  # a yield to the loop, not a wait: let holders finish
        assert admission.ticket is not None
        held += 1  # Redis counted this lease before we did ...
        peak = max(peak, held)
        for _ in range(3):
            await asyncio.sleep(0)
        held -= 1  # ... and forgets it only after we did
        served += 1
        assert await cap.release(admission.ticket, 1)

    await asyncio.gather(*(one(i) for i in range(200)))
    assert served == 200
    assert peak == 10
    assert await redis_a.zcard(f"{{{prefix}:l:{lid}}}:leases") == 0


# ---- windows come back by themselves -----------------------------------------------------------


async def test_a_listing_at_its_rpm_cap_comes_back_in_the_next_minute(
    two: tuple[Capacity, Capacity], clock: Clock
) -> None:
    lid, limits = listing(), {"rpm": 3}
    clock.now = START + 42.5
    assert sum(a.admitted for a in await take_many(two, lid, limits, 5)) == 3
    refused = await two[0].take(lid, limits, 1, "late")
    assert (refused.limit, refused.retry_after) == ("rpm", 17.5)
    clock.now = START + 59.999
    assert not (await two[1].take(lid, limits, 1, "still-late")).admitted
    clock.now = START + 60.0
    assert sum(a.admitted for a in await take_many(two, lid, limits, 5)) == 3


async def test_daily_and_monthly_caps_reset_at_utc_midnight_and_month_end(
    two: tuple[Capacity, Capacity], clock: Clock
) -> None:
    lid = listing()
    clock.now = START + 119.0  # 2024-05-31 23:59:59
    daily = {"daily_tokens": 1000}
    assert (await two[0].take(lid, daily, 1000, "a")).admitted
    refused = await two[1].take(lid, daily, 1, "b")
    assert (refused.limit, refused.retry_after, refused.exhausts_listing) == ("daily_tokens", 1.0, True)
    monthly = {"daily_tokens": 2000, "monthly_tokens": 1500}
    other = listing()
    assert (await two[0].take(other, monthly, 900, "c")).admitted
    both = await two[0].take(other, monthly, 700, "d")  # over monthly only ...
    assert (both.limit, both.retry_after) == ("monthly_tokens", 1.0)
    clock.now = START + 120.0  # 2024-06-01 00:00:00: a new day and a new month
    assert (await two[1].take(lid, daily, 1000, "e")).admitted
    assert (await two[1].take(other, monthly, 1000, "f")).admitted


async def test_the_latest_reset_is_reported_when_several_limits_refuse(
    two: tuple[Capacity, Capacity], clock: Clock
) -> None:
    lid, limits = listing(), {"rpm": 1, "daily_tokens": 100}
    clock.now = START + 30
    assert (await two[0].take(lid, limits, 100, "a")).admitted
    refused = await two[1].take(lid, limits, 1, "b")
    assert (refused.limit, refused.retry_after) == ("daily_tokens", 90.0)


async def test_a_crashed_holders_slot_frees_itself_when_its_lease_ends(
    two: tuple[Capacity, Capacity], clock: Clock
) -> None:
    lid, limits = listing(), {"concurrency": 1}
    crashed = await two[0].take(lid, limits, 1, "crashed")  # never released
    assert crashed.admitted
    clock.now += 20
    refused = await two[1].take(lid, limits, 1, "waiting")
    assert (refused.limit, refused.retry_after) == ("concurrency", 40.0)
    clock.now += 40
    assert (await two[1].take(lid, limits, 1, "waiting")).admitted
    assert crashed.ticket is not None
    assert not await two[0].release(crashed.ticket, 1)  # too late: nothing to free any more


async def test_a_renewed_lease_outlives_its_first_deadline(two: tuple[Capacity, Capacity], clock: Clock) -> None:
    lid, limits = listing(), {"concurrency": 1}
    stream = await two[0].take(lid, limits, 1, "stream")
    assert stream.ticket is not None
    clock.now += 50
    assert await two[0].renew(stream.ticket)
    clock.now += 50  # past the first deadline, inside the renewed one
    assert not (await two[1].take(lid, limits, 1, "other")).admitted
    clock.now += 11
    assert not await two[0].renew(stream.ticket)  # expired leases stay expired
    assert (await two[1].take(lid, limits, 1, "other")).admitted


# ---- release, cancel, idempotency --------------------------------------------------------------


async def test_release_corrects_tokens_by_actual_minus_estimate(two: tuple[Capacity, Capacity]) -> None:
    lid, limits = listing(), {"tpm": 1000, "daily_tokens": 5000, "rpm": 10}
    first = await two[0].take(lid, limits, 400, "a")
    assert (await two[1].take(lid, limits, 400, "b")).admitted
    assert not (await two[0].take(lid, limits, 400, "c")).admitted
    assert first.ticket is not None
    assert await two[1].release(first.ticket, actual_tokens=100)
    state = (await two[0].state([lid], {lid: limits}))[lid]
    assert state.usage == Usage(concurrency=1, rpm=2, tpm=500, daily_tokens=500, monthly_tokens=0)
    assert (await two[0].take(lid, limits, 400, "c")).admitted


async def test_releasing_twice_refunds_once(two: tuple[Capacity, Capacity]) -> None:
    lid, limits = listing(), {"tpm": 1000}
    taken = await two[0].take(lid, limits, 400, "a")
    assert taken.ticket is not None
    assert await two[0].release(taken.ticket, 0)
    assert not await two[1].release(taken.ticket, 0)
    assert (await two[0].state([lid]))[lid].usage.tpm == 0


async def test_an_overrun_adds_and_counters_never_go_negative(two: tuple[Capacity, Capacity]) -> None:
    lid, limits = listing(), {"tpm": 1000}
    over = await two[0].take(lid, limits, 100, "over")
    under = await two[0].take(lid, limits, 500, "under")
    assert over.ticket is not None and under.ticket is not None
    assert await two[0].release(over.ticket, 250)
    assert (await two[0].state([lid]))[lid].usage.tpm == 750
    await two[0]._redis.set(f"{{{two[0]._prefix}:l:{lid}}}:tpm:{int(START // 60)}", 100)  # e.g. an operator reset
    assert await two[0].release(under.ticket, 0)
    assert (await two[0].state([lid]))[lid].usage.tpm == 0


async def test_a_cancel_gives_back_the_request_too(two: tuple[Capacity, Capacity]) -> None:
    lid, limits = listing(), {"rpm": 1, "tpm": 100}
    taken = await two[0].take(lid, limits, 100, "a")
    assert taken.ticket is not None
    assert await two[1].cancel(taken.ticket)
    assert (await two[0].state([lid]))[lid].usage == Usage()
    assert (await two[1].take(lid, limits, 100, "b")).admitted


async def test_a_repeated_take_of_the_same_request_counts_once(two: tuple[Capacity, Capacity]) -> None:
    lid, limits = listing(), {"rpm": 5, "tpm": 1000}
    assert (await two[0].take(lid, limits, 100, "same")).admitted
    assert (await two[1].take(lid, limits, 100, "same")).admitted
    assert (await two[0].state([lid]))[lid].usage == Usage(concurrency=1, rpm=1, tpm=100)


async def test_a_request_too_large_for_a_limit_is_refused_without_touching_redis(
    two: tuple[Capacity, Capacity], redis_a: Redis, prefix: str
) -> None:
    lid = listing()
    refused = await two[0].take(lid, {"tpm": 1000}, 1001, "huge")
    assert (refused.admitted, refused.limit, refused.retry_after, refused.exhausts_listing) == (
        False,
        "tpm",
        None,
        False,
    )
    assert [k async for k in redis_a.scan_iter(match=f"{{{prefix}:l:{lid}}}*")] == []


async def test_unlimited_listings_still_report_requests_in_flight(two: tuple[Capacity, Capacity]) -> None:
    lid = listing()
    assert all(a.admitted for a in await take_many(two, lid, {}, 7))
    state = (await two[1].state([lid]))[lid]
    assert state.usage == Usage(concurrency=7)
    assert state.headroom() == 1.0


async def test_every_key_carries_a_ttl(two: tuple[Capacity, Capacity], redis_a: Redis, prefix: str) -> None:
    lid = listing()
    await two[0].take(lid, {"rpm": 5, "tpm": 50, "daily_tokens": 500, "monthly_tokens": 5000}, 10, "a")
    keys = [k async for k in redis_a.scan_iter(match=f"{{{prefix}:l:{lid}}}*")]
    assert len(keys) == 5
    assert all([await redis_a.pttl(k) > 0 for k in keys])


# ---- state -------------------------------------------------------------------------------------


async def test_state_reads_many_listings_at_once(two: tuple[Capacity, Capacity]) -> None:
    busy, idle = listing(), listing()
    limits = {"rpm": 10, "concurrency": 4}
    await take_many(two, busy, limits, 3, tokens=7)
    states = await two[0].state([busy, idle, busy], {busy: limits})
    assert list(states) == [busy, idle]
    assert states[busy].usage == Usage(concurrency=3, rpm=3)
    assert states[busy].remaining() == {"rpm": 7, "concurrency": 1}
    assert states[busy].headroom() == pytest.approx(0.25)
    assert states[idle].usage == Usage() and states[idle].limits == Limits()


# ---- pipelines, round trips, NOSCRIPT ----------------------------------------------------------


async def test_take_rides_in_someone_elses_pipeline_in_one_round_trip(prefix: str, clock: Clock) -> None:
    pool = ConnectionPool.from_url(TEST_REDIS_URL, connection_class=CountingConnection)
    redis = Redis(connection_pool=pool)
    try:
        cap = Capacity(redis, prefix, clock)
        lid = listing()
        await cap.take(lid, {"rpm": 5}, 10, "warm-up")  # loads the script, opens the connection
        CountingConnection.sends = 0
        async with redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{prefix}:other-slot", "buyer hold stands in here")
            pending = cap.take_in(pipe, lid, {"rpm": 5}, 10, "r1")
            pipe.get(f"{prefix}:other-slot")
            results = await pipe.execute(raise_on_error=False)
        admission = await pending.resolve(results)
        assert admission.admitted and results[2] == b"buyer hold stands in here"
        assert CountingConnection.sends == 1
        assert admission.ticket is not None
        async with redis.pipeline(transaction=False) as pipe:
            released = cap.release_in(pipe, admission.ticket, 3)
            renewed = cap.renew_in(pipe, admission.ticket)  # order matters: released first
            results = await pipe.execute(raise_on_error=False)
        assert await released.resolve(results) is True
        assert await renewed.resolve(results) is False
        assert CountingConnection.sends == 2
    finally:
        await redis.aclose()
        await pool.aclose()


async def test_scripts_survive_a_flushed_script_cache(
    two: tuple[Capacity, Capacity], redis_a: Redis, prefix: str
) -> None:
    lid, limits = listing(), {"rpm": 2, "concurrency": 5}
    first = await two[0].take(lid, limits, 1, "a")
    assert first.ticket is not None
    await redis_a.script_flush("SYNC")  # what a Redis restart does
    async with redis_a.pipeline(transaction=False) as pipe:
        pipe.set(f"{prefix}:neighbour", "1")
        pending = two[0].take_in(pipe, lid, limits, 1, "b")
        results = await pipe.execute(raise_on_error=False)
    assert results[0] is True  # the neighbour's command was not lost
    assert (await pending.resolve(results)).admitted
    assert await redis_a.script_exists(two[0]._take.sha) == [True]  # the fallback cached it again
    await redis_a.script_flush("SYNC")
    assert not (await two[1].take(lid, limits, 1, "c")).admitted  # direct calls recover too
    await redis_a.script_flush("SYNC")
    assert await two[1].release(first.ticket, 1)
    await redis_a.script_flush("SYNC")
    assert not await two[1].renew(first.ticket)
    assert (await two[0].state([lid]))[lid].usage == Usage(concurrency=1, rpm=2)


async def test_other_script_errors_are_raised_not_swallowed(two: tuple[Capacity, Capacity], redis_a: Redis) -> None:
    lid = listing()
    await redis_a.set(f"{{{two[0]._prefix}:l:{lid}}}:leases", "not a zset")
    with pytest.raises(redis_sync.ResponseError):
        await two[0].take(lid, {"rpm": 1}, 1, "a")


async def test_why_not_register_script_it_costs_a_round_trip_per_pipeline(prefix: str) -> None:
    """redis-py's Script on a pipeline sends SCRIPT EXISTS before every execute(); if this ever stops
    being true, LuaScript could go back to register_script."""
    pool = ConnectionPool.from_url(TEST_REDIS_URL, connection_class=CountingConnection)
    redis = Redis(connection_pool=pool)
    try:
        script = redis.register_script("return 1")
        await script()
        CountingConnection.sends = 0
        async with redis.pipeline(transaction=False) as pipe:
            await script(client=pipe)
            await pipe.execute()
        assert CountingConnection.sends == 2
    finally:
        await redis.aclose()
        await pool.aclose()
