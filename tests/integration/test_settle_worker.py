"""The settlement worker against a real Postgres and Redis: rows, transfers, acks, replays, poison,
dead consumers, concurrency and throughput."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from decimal import Decimal

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.errors import LedgerError
from aichat_gateway.billing.ledger import AccountKind
from aichat_gateway.billing.meter import stream_key
from aichat_gateway.billing.settle import GROUP, Settler
from aichat_gateway.billing.settleplan import COLLISION
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
    usage_event,
    usage_totals,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SETTLED_AT = 1_717_200_000.0


@pytest.fixture
def dsn() -> Iterator[str]:
    """A database per test: balances and counts are then exact, with no other test's rows."""
    with migrated_database("settle") as url:
        yield url


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("st") as p:
        yield p


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def recorder(dsn: str) -> Recorder:
    return Recorder(dsn)


def settler(db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder, **options: object) -> Settler:
    settings: dict[str, object] = {"consumer": "worker-1", "block_ms": 10, "clock": lambda: SETTLED_AT}
    settings.update(options)
    return Settler(db, redis, prefix, FEE, after_commit=recorder, **settings)  # type: ignore[arg-type]


async def drain(worker: Settler, within: float = 30.0) -> int:
    """run_once until a call finds nothing left; the number of entries handled."""
    handled = 0
    deadline = time.monotonic() + within
    while (n := await worker.run_once()) > 0:
        handled += n
        assert time.monotonic() < deadline, "the stream did not drain"
    return handled


async def pending(redis: Redis, stream: str) -> int:
    summary = await redis.xpending(stream, GROUP)
    return int(summary["pending"])


# ---- one batch --------------------------------------------------------------------------------------


async def test_a_batch_of_events_becomes_one_usage_row_each(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 3)
        sellers = [await new_user(conn) for _ in range(2)]
    events = mixed_events(buyers, sellers, 40)
    await append(redis, prefix, events)

    assert await settler(db, redis, prefix, recorder).run_once() == 40

    async with db.acquire() as conn:
        rows = {r["request_id"]: r for r in await conn.fetch("SELECT * FROM usage_records")}
    assert set(rows) == {e.request_id for e in events}
    for event in events:
        row = rows[event.request_id]
        assert str(row["buyer_id"]) == event.user_id and row["cost_micro"] == event.cost_micro
        assert row["held_micro"] == event.held_micro and row["prompt_tokens"] == event.prompt_tokens
        assert row["stream"] is event.stream and row["settled_at"].timestamp() == SETTLED_AT
        assert row["fee_micro"] == event.cost_micro * 10 // 100
        assert (row["transfer_id"] is not None) == (event.cost_micro > 0)


async def test_each_costed_row_gets_its_own_usage_transfer(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 2)
        seller = await new_user(conn)
    events = mixed_events(buyers, [seller], 20)
    await append(redis, prefix, events)

    await settler(db, redis, prefix, recorder).run_once()

    async with db.acquire() as conn:
        linked = await conn.fetch(
            """SELECT u.request_id, t.idempotency_key, t.kind FROM usage_records u
               JOIN transfers t ON t.id = u.transfer_id"""
        )
        assert await usage_totals(conn) == (20, Expected.of(events).cost, Expected.of(events).transfers)
    assert {r["idempotency_key"] for r in linked} == {f"usage:{e.request_id}" for e in events if e.cost_micro}
    assert {r["kind"] for r in linked} == {"usage"}


async def test_a_batch_moves_money_from_buyers_to_sellers_and_the_platform(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 3)
        sellers = [await new_user(conn) for _ in range(2)]
    events = mixed_events(buyers, sellers, 60)
    await append(redis, prefix, events)

    await settler(db, redis, prefix, recorder).run_once()

    expected = Expected.of(events)
    async with db.acquire() as conn:
        assert await balances(conn, AccountKind.BUYER) == {b: FUNDS + expected.buyer[b] for b in buyers}
        assert await balances(conn, AccountKind.SELLER) == expected.seller
        assert await platform_balance(conn) == expected.platform
        assert await audit(conn) == []


async def test_after_commit_hears_every_pair_once_the_rows_are_committed(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 2)
        seller = await new_user(conn)
    events = mixed_events(buyers, [seller], 15)
    await append(redis, prefix, events)

    await settler(db, redis, prefix, recorder).run_once()

    assert recorder.calls == [[(e.user_id, e.request_id) for e in events]]
    assert recorder.visible == [True]


async def test_settled_entries_are_acked_then_trimmed_after_the_retention_window(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    await append(redis, prefix, mixed_events(buyers, [seller], 25))
    now = [time.time()]
    worker = settler(db, redis, prefix, recorder, clock=lambda: now[0], retain_ms=60_000, trim_every=0)
    assert await worker.backlog() == 25

    await worker.run_once()
    assert await pending(redis, worker.stream) == 0
    assert await worker.backlog() == 0
    assert await redis.xlen(worker.stream) == 25  # still readable for the retention window

    now[0] += 61  # a minute later: the next batch trims what was settled
    await append(redis, prefix, mixed_events(buyers, [seller], 1))
    await worker.run_once()
    assert await redis.xlen(worker.stream) <= 1  # at most the newest entry is kept (the group's position)
    assert await worker.backlog() == 0


async def test_trimming_never_drops_an_entry_that_is_not_settled(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    await append(redis, prefix, mixed_events(buyers, [seller], 5))
    await redis.xgroup_create(stream_key(prefix), GROUP, id="0", mkstream=True)
    # Another consumer read them and died: pending, unacked.
    await redis.xreadgroup(GROUP, "dead-worker", {stream_key(prefix): ">"}, count=5)
    await append(redis, prefix, mixed_events(buyers, [seller], 3))  # and three never delivered
    now = [time.time() + 3600]  # long past the retention window
    worker = settler(db, redis, prefix, recorder, clock=lambda: now[0], retain_ms=1, trim_every=0)
    await worker._trim()
    assert await redis.xlen(worker.stream) == 8


async def test_a_big_backlog_settles_in_batches_of_batch_size(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 3)
        seller = await new_user(conn)
    events = mixed_events(buyers, [seller], 250)
    await append(redis, prefix, events)
    worker = settler(db, redis, prefix, recorder, batch_size=100)

    assert [await worker.run_once() for _ in range(4)] == [100, 100, 50, 0]
    async with db.acquire() as conn:
        assert await usage_totals(conn) == (250, Expected.of(events).cost, Expected.of(events).transfers)


async def test_an_empty_stream_settles_nothing(db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder) -> None:
    worker = settler(db, redis, prefix, recorder)
    assert await worker.run_once() == 0
    assert recorder.calls == [] and await worker.backlog() == 0


# ---- replays ------------------------------------------------------------------------------------------


async def test_a_request_delivered_twice_in_one_batch_is_charged_once(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        [buyer] = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    event = usage_event(buyer, seller, 5_000)
    await append(redis, prefix, [event, event])

    assert await settler(db, redis, prefix, recorder).run_once() == 2

    async with db.acquire() as conn:
        assert await usage_totals(conn) == (1, 5_000, 1)
        assert await balances(conn, AccountKind.BUYER) == {buyer: FUNDS - 5_000}
    assert recorder.pairs == [(buyer, event.request_id), (buyer, event.request_id)]


async def test_a_request_delivered_again_after_it_settled_posts_nothing_and_is_still_reported(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        [buyer] = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    event = usage_event(buyer, seller, 5_000)
    worker = settler(db, redis, prefix, recorder)
    await append(redis, prefix, [event])
    await worker.run_once()
    await append(redis, prefix, [event])

    assert await worker.run_once() == 1

    async with db.acquire() as conn:
        assert await usage_totals(conn) == (1, 5_000, 1)
        assert await balances(conn, AccountKind.SELLER) == {seller: 4_500}
    assert recorder.calls == [[(buyer, event.request_id)], [(buyer, event.request_id)]]
    assert await worker.backlog() == 0


async def test_a_different_request_under_a_settled_id_goes_to_the_dead_stream(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        [buyer] = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    first = usage_event(buyer, seller, 5_000, request_id="req_client_chosen_id")
    worker = settler(db, redis, prefix, recorder)
    await append(redis, prefix, [first])
    await worker.run_once()
    await append(redis, prefix, [usage_event(buyer, seller, 7_000, request_id="req_client_chosen_id")])

    await worker.run_once()

    async with db.acquire() as conn:
        assert await usage_totals(conn) == (1, 5_000, 1)
    [(_, fields)] = await redis.xrange(worker.dead_stream)
    assert fields[b"reason"].decode() == COLLISION
    assert orjson.loads(fields[b"e"])["cost_micro"] == "7000"
    assert recorder.calls == [[(buyer, first.request_id)]]
    assert await worker.backlog() == 0


# ---- poison -------------------------------------------------------------------------------------------


async def test_a_poison_entry_goes_to_the_dead_stream_and_the_rest_settle(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 2)
        seller = await new_user(conn)
    worker = settler(db, redis, prefix, recorder)
    before = mixed_events(buyers, [seller], 5)
    after = mixed_events(buyers, [seller], 5)
    await append(redis, prefix, before)
    poison_id = await redis.xadd(worker.stream, {"e": b'{"request_id": "req_broken", "cost_micro": "lots"}'})
    await append(redis, prefix, after)

    assert await worker.run_once() == 11

    async with db.acquire() as conn:
        assert (await usage_totals(conn))[0] == 10
    [(_, fields)] = await redis.xrange(worker.dead_stream)
    assert fields[b"id"] == poison_id and fields[b"reason"].startswith(b"cost_micro:")
    assert fields[b"e"] == b'{"request_id": "req_broken", "cost_micro": "lots"}'
    assert await worker.backlog() == 0 and await pending(redis, worker.stream) == 0


async def test_an_entry_without_json_goes_to_the_dead_stream(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    worker = settler(db, redis, prefix, recorder)
    await redis.xadd(worker.stream, {"something": "else"})

    assert await worker.run_once() == 1

    [(_, fields)] = await redis.xrange(worker.dead_stream)
    assert fields[b"reason"] == b"no 'e' field"
    assert await worker.backlog() == 0


async def test_a_charge_for_a_buyer_with_no_user_row_goes_to_the_dead_stream(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        [buyer] = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    ghost = str(uuid.uuid4())
    worker = settler(db, redis, prefix, recorder)
    charged_ghost = usage_event(ghost, seller, 3_000)
    free_ghost = usage_event(ghost, None, 0)
    fine = usage_event(buyer, seller, 2_000)
    await append(redis, prefix, [charged_ghost, free_ghost, fine])

    await worker.run_once()

    async with db.acquire() as conn:
        stored = {r["request_id"] for r in await conn.fetch("SELECT request_id FROM usage_records")}
        assert await audit(conn) == []
    assert stored == {free_ghost.request_id, fine.request_id}  # a free request is history, whoever made it
    [(_, fields)] = await redis.xrange(worker.dead_stream)
    assert orjson.loads(fields[b"e"])["request_id"] == charged_ghost.request_id
    assert fields[b"reason"].startswith(b"user_id:")
    assert recorder.pairs == [(ghost, free_ghost.request_id), (buyer, fine.request_id)]


async def test_a_value_postgres_refuses_is_found_and_set_aside_alone(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 2)
        seller = await new_user(conn)
        # A rule the worker does not know about: Postgres is the last word.
        await conn.execute("ALTER TABLE usage_records ADD CONSTRAINT no_sevens CHECK (prompt_tokens <> 7777)")
    events = mixed_events(buyers, [seller], 9)
    refused = dataclasses.replace(usage_event(buyers[0], seller, 1_000), prompt_tokens=7777)
    worker = settler(db, redis, prefix, recorder)
    await append(redis, prefix, [*events[:4], refused, *events[4:]])

    assert await worker.run_once() == 10

    expected = Expected.of(events)
    async with db.acquire() as conn:
        assert await usage_totals(conn) == (9, expected.cost, expected.transfers)
        assert await audit(conn) == []
    [(_, fields)] = await redis.xrange(worker.dead_stream)
    assert fields[b"reason"].startswith(b"postgres refused (23514)")
    assert await worker.backlog() == 0


# ---- dead consumers -----------------------------------------------------------------------------------


async def test_entries_a_dead_consumer_read_are_claimed_by_another_once_idle(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 2)
        seller = await new_user(conn)
    events = mixed_events(buyers, [seller], 30)
    worker = settler(db, redis, prefix, recorder, consumer="survivor", claim_idle_ms=50)
    assert await worker.run_once() == 0  # makes the group
    await append(redis, prefix, events)
    # A consumer reads everything and dies before settling any of it.
    await redis.xreadgroup(GROUP, "casualty", {worker.stream: ">"}, count=1_000)
    assert await pending(redis, worker.stream) == 30

    deadline = time.monotonic() + 10
    settled = 0
    while settled < 30:  # Redis's own idle clock decides; poll until it lets the claim through
        settled += await worker.run_once()
        assert time.monotonic() < deadline, "the dead consumer's entries were never claimed"

    async with db.acquire() as conn:
        assert await usage_totals(conn) == (30, Expected.of(events).cost, Expected.of(events).transfers)
    assert await pending(redis, worker.stream) == 0 and await worker.backlog() == 0


async def test_a_live_consumers_fresh_entries_are_not_claimed(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    worker = settler(db, redis, prefix, recorder, consumer="other", claim_idle_ms=60_000)
    await worker.run_once()
    await append(redis, prefix, mixed_events(buyers, [seller], 5))
    await redis.xreadgroup(GROUP, "busy", {worker.stream: ">"}, count=1_000)

    assert await worker.run_once() == 0
    assert await pending(redis, worker.stream) == 5


async def test_a_consumer_settles_its_own_unacked_entries_first(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    worker = settler(db, redis, prefix, recorder, consumer="restarted")
    await worker.run_once()
    old = mixed_events(buyers, [seller], 3)
    await append(redis, prefix, old)
    await redis.xreadgroup(GROUP, "restarted", {worker.stream: ">"}, count=1_000)  # its previous life
    await append(redis, prefix, mixed_events(buyers, [seller], 4))

    assert await worker.run_once() == 3
    assert recorder.pairs == [(e.user_id, e.request_id) for e in old]
    assert await worker.run_once() == 4


# ---- together -----------------------------------------------------------------------------------------


async def test_two_settlers_share_one_stream_without_deadlock_or_double_charges(
    dsn: str, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    pools = [await asyncpg.create_pool(dsn, min_size=1, max_size=2) for _ in range(2)]
    try:
        async with pools[0].acquire() as conn:
            buyers = await funded_buyers(conn, 4)
            sellers = [await new_user(conn) for _ in range(3)]
        events = mixed_events(buyers, sellers, 2_000)
        # The same events twice: redeliveries interleaved between both workers.
        await append(redis, prefix, events + events)
        workers = [
            settler(pool, redis, prefix, recorder, consumer=f"w{i}", batch_size=50) for i, pool in enumerate(pools)
        ]
        handled = await asyncio.gather(*(drain(w) for w in workers))

        assert sum(handled) == 4_000
        expected = Expected.of(events)
        async with pools[0].acquire() as conn:
            assert await usage_totals(conn) == (2_000, expected.cost, expected.transfers)
            assert await balances(conn, AccountKind.SELLER) == expected.seller
            assert await platform_balance(conn) == expected.platform
            assert await audit(conn) == []
    finally:
        for pool in pools:
            await pool.close()


async def test_settling_keeps_up_with_thousands_of_events_a_second(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 200)
        sellers = [await new_user(conn) for _ in range(20)]
    events = mixed_events(buyers, sellers, 20_000)
    await append(redis, prefix, events)
    worker = settler(db, redis, prefix, recorder)
    await worker.run_once()  # accounts are created on first sight: measure the steady state after

    started = time.perf_counter()
    handled = 500 + await drain(worker)
    rate = (handled - 500) / (time.perf_counter() - started)

    with capsys.disabled():
        print(f"\nsettlement: {rate:,.0f} events/s ({handled - 500} events, batch 500)")
    assert handled == 20_000
    assert rate > 1_000  # a floor for a busy shared machine; the measured figure is printed


async def test_a_request_whose_seller_is_its_buyer_books_the_whole_cost_to_the_platform_and_is_logged(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        [dealer] = await funded_buyers(conn, 1)
        platform_before = await platform_balance(conn)
    event = usage_event(dealer, dealer, 5_000)
    await append(redis, prefix, [event])

    with capture_logs() as logs:
        assert await settler(db, redis, prefix, recorder).run_once() == 1

    async with db.acquire() as conn:
        assert (await balances(conn, AccountKind.SELLER)).get(dealer, 0) == 0
        assert (await balances(conn, AccountKind.BUYER))[dealer] == FUNDS - 5_000
        assert await platform_balance(conn) - platform_before == 5_000
        query = "SELECT cost_micro, fee_micro FROM usage_records WHERE request_id = $1"
        row = await conn.fetchrow(query, event.request_id)
        assert row is not None and (row["cost_micro"], row["fee_micro"]) == (5_000, 5_000)
        assert await audit(conn) == []
    refused = [entry for entry in logs if entry["event"] == "self_dealing_refused"]
    assert refused == [
        {
            "event": "self_dealing_refused",
            "log_level": "warning",
            "request_id": event.request_id,
            "buyer_id": dealer,
            "listing_id": event.listing_id,
        }
    ]
    assert recorder.pairs == [(dealer, event.request_id)]  # settled like any other request


async def test_the_fee_rate_is_checked_when_the_worker_is_built(db: asyncpg.Pool, redis: Redis, prefix: str) -> None:
    with pytest.raises(LedgerError, match="fee_rate"):
        Settler(db, redis, prefix, Decimal("1.5"), after_commit=Recorder(), consumer="x")


# ---- failures between commit and ack -------------------------------------------------------------------


class FailingOnce(Recorder):
    """An after_commit whose first call fails, as the hot balances would with Redis gone."""

    async def __call__(self, settled: Sequence[tuple[str, str]]) -> None:
        await super().__call__(settled)
        if len(self.calls) == 1:
            raise RedisConnectionError("hot balances unreachable")


async def test_a_failed_after_commit_leaves_the_entries_unacked_and_the_retry_charges_nothing_twice(
    dsn: str, db: asyncpg.Pool, redis: Redis, prefix: str
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 2)
        seller = await new_user(conn)
    events = mixed_events(buyers, [seller], 12)
    await append(redis, prefix, events)
    flaky = FailingOnce(dsn)
    worker = settler(db, redis, prefix, flaky)

    with pytest.raises(RedisConnectionError):
        await worker.run_once()
    assert await pending(redis, worker.stream) == 12  # committed, but not acked

    assert await worker.run_once() == 12
    expected = Expected.of(events)
    async with db.acquire() as conn:
        assert await usage_totals(conn) == (12, expected.cost, expected.transfers)
        assert await audit(conn) == []
    assert flaky.calls[0] == flaky.calls[1] == [(e.user_id, e.request_id) for e in events]
    assert await worker.backlog() == 0


async def test_a_stream_deleted_under_the_worker_gets_its_group_back(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    worker = settler(db, redis, prefix, recorder)
    await worker.run_once()
    await redis.delete(worker.stream)  # Redis restarted empty, or someone deleted the key
    await append(redis, prefix, mixed_events(buyers, [seller], 3))

    with pytest.raises(ResponseError, match="NOGROUP"):
        await worker.run_once()
    assert await worker.run_once() == 3
    assert await worker.backlog() == 0


async def test_after_a_partial_batch_the_worker_lingers_so_the_next_one_fills_up(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        buyers = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    await append(redis, prefix, mixed_events(buyers, [seller], 5))
    stop = asyncio.Event()
    naps: list[float] = []

    async def nap(seconds: float) -> None:
        naps.append(seconds)
        stop.set()  # one batch and its linger are all this test needs

    worker = settler(db, redis, prefix, recorder, linger=0.25, sleep=nap, batch_size=100)
    await asyncio.wait_for(worker.run(stop), timeout=10)
    assert naps == [0.25]
    assert await worker.backlog() == 0


# ---- cost beyond the hold: the seller is paid in full, the platform bears the rest -----------------


async def test_a_cost_beyond_the_hold_pays_the_seller_in_full_and_debits_the_platforms_exposure(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        [buyer] = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    held, beyond = 34_080_000, 135_930_000  # the 2,000-image request: $34.08 held, $170.01 billed
    event = dataclasses.replace(usage_event(buyer, seller, held), held_micro=held, beyond_hold_micro=beyond)
    await append(redis, prefix, [event])
    await drain(settler(db, redis, prefix, recorder))

    async with db.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM usage_records WHERE request_id = $1", event.request_id)
        assert row is not None and row["cost_micro"] == held and row["beyond_hold_micro"] == beyond
        assert (await balances(conn, AccountKind.BUYER))[buyer] == FUNDS - held
        fee = (held + beyond) // 10
        assert (await balances(conn, AccountKind.SELLER))[seller] == held + beyond - fee
        assert await platform_balance(conn) == fee
        exposure = await conn.fetchval("SELECT balance_micro FROM ledger_accounts WHERE kind = 'platform_exposure'")
        assert exposure == -beyond
        assert await audit(conn) == []


async def test_the_audit_names_a_cost_beyond_the_hold_that_no_exposure_entry_books(
    db: asyncpg.Pool, redis: Redis, prefix: str, recorder: Recorder
) -> None:
    async with db.acquire() as conn:
        [buyer] = await funded_buyers(conn, 1)
        seller = await new_user(conn)
    event = usage_event(buyer, seller, 1_000)
    await append(redis, prefix, [event])
    await drain(settler(db, redis, prefix, recorder))
    async with db.acquire() as conn:
        await conn.execute("UPDATE usage_records SET beyond_hold_micro = 77 WHERE request_id = $1", event.request_id)
        breaches = await audit(conn)
    assert [b.invariant for b in breaches] == ["beyond_hold_booked_to_exposure"]
    assert event.request_id in breaches[0].detail
