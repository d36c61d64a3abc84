"""The Lua scripts agree with a plain-Python model of capacity, over random histories.

Each history takes, releases, cancels and renews on one listing from two "processes" while an
injected clock jumps across minute, day and month boundaries; after every step the admission (or
release/renew answer) and the usage Redis reports must equal the model's.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from aichat_gateway.marketplace.capacity import (
    COUNTERS,
    Admission,
    Capacity,
    Limits,
    Ticket,
    Usage,
    refusing_limit,
    resets_at_ms,
    too_large,
    violations,
    windows,
)
from tests.support.rediskit import START, Clock, delete_tagged
from tests.support.scratch import TEST_REDIS_URL
from tests.support.scratch import redis_prefix as scratch_redis_prefix

LEASE_MS = 30_000


def window_id(name: str, now_ms: int) -> str:
    w = windows(now_ms)
    return {"rpm": str(w.minute), "tpm": str(w.minute), "daily_tokens": w.day, "monthly_tokens": w.month}[name]


@dataclass
class Model:
    limits: Limits
    now_ms: int
    leases: dict[str, int] = field(default_factory=dict)
    counters: dict[tuple[str, str], int] = field(default_factory=dict)  # (counter, window) -> value

    def usage(self, purge: bool) -> Usage:
        if purge:
            self.leases = {rid: d for rid, d in self.leases.items() if d > self.now_ms}
        in_flight = sum(d > self.now_ms for d in self.leases.values())
        used = [self.counters.get((name, window_id(name, self.now_ms)), 0) for name in COUNTERS]
        return Usage(in_flight, *used)

    def take(self, rid: str, estimated: int) -> tuple[bool, str | None, float | None]:
        if (name := too_large(self.limits, estimated)) is not None:
            return False, name, None
        usage = self.usage(purge=True)
        if rid in self.leases:
            return True, None, None
        refused = violations(usage, self.limits, estimated)
        if refused:
            earliest = min(self.leases.values(), default=-1)
            name = refusing_limit(refused, windows(self.now_ms), self.now_ms, earliest)
            return False, name, (resets_at_ms(name, windows(self.now_ms), self.now_ms, earliest) - self.now_ms) / 1000
        self.leases[rid] = self.now_ms + LEASE_MS
        for name in COUNTERS:
            if self.limits.get(name) is not None:
                key = (name, window_id(name, self.now_ms))
                self.counters[key] = self.counters.get(key, 0) + (1 if name == "rpm" else estimated)
        return True, None, None

    def release(self, ticket: Ticket, actual: int, cancel: bool) -> bool:
        if self.leases.pop(ticket.request_id, None) is None:
            return False
        for name in ticket.counters:
            delta = (-1 if cancel else 0) if name == "rpm" else actual - ticket.estimated_tokens
            key = (name, window_id(name, ticket.taken_at_ms))
            if delta and key in self.counters:
                self.counters[key] = max(0, self.counters[key] + delta)
        return True

    def renew(self, ticket: Ticket) -> bool:
        deadline = self.leases.get(ticket.request_id)
        if deadline is None or deadline <= self.now_ms:
            return False
        self.leases[ticket.request_id] = max(deadline, self.now_ms + LEASE_MS)
        return True


LIMITS = st.fixed_dictionaries(
    {},
    optional={
        "rpm": st.integers(0, 6),
        "tpm": st.integers(0, 900),
        "concurrency": st.integers(0, 4),
        "daily_tokens": st.integers(0, 2000),
        "monthly_tokens": st.integers(0, 3000),
    },
)
RID = st.integers(0, 5)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("take"), st.integers(0, 1), RID, st.integers(0, 400)),
        st.tuples(st.just("release"), st.integers(0, 1), RID, st.integers(0, 500)),
        st.tuples(st.just("cancel"), st.integers(0, 1), RID, st.just(0)),
        st.tuples(st.just("renew"), st.integers(0, 1), RID, st.just(0)),
        st.tuples(st.just("advance"), st.just(0), st.just(0), st.integers(0, 70_000)),
    ),
    min_size=5,
    max_size=40,
)


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("capm") as p:
        try:
            yield p
        finally:
            delete_tagged(p)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limits=LIMITS, offset_ms=st.integers(0, 120_000), ops=OPS)
def test_redis_agrees_with_the_model(
    prefix: str, limits: dict[str, int], offset_ms: int, ops: list[tuple[str, int, int, int]]
) -> None:
    asyncio.run(replay(prefix, limits, offset_ms, ops))


async def replay(prefix: str, limits: dict[str, int], offset_ms: int, ops: list[tuple[str, int, int, int]]) -> None:
    clock = Clock(START + offset_ms / 1000)
    clients = [Redis.from_url(TEST_REDIS_URL), Redis.from_url(TEST_REDIS_URL)]
    try:
        caps = [Capacity(c, prefix, clock, lease=LEASE_MS / 1000) for c in clients]
        model = Model(Limits.of(limits), int(clock.now * 1000))
        lid, tickets = str(uuid.uuid4()), dict[int, Ticket]()
        for op, proc, rid, amount in ops:
            cap = caps[proc]
            if op == "advance":
                clock.now += amount / 1000
                model.now_ms = int(clock.now * 1000)
            elif op == "take":
                admission: Admission = await cap.take(lid, limits, amount, f"r{rid}")
                expected = model.take(f"r{rid}", amount)
                assert (admission.admitted, admission.limit, admission.retry_after) == expected, op
                if admission.ticket is not None:
                    tickets[rid] = admission.ticket
            elif rid in tickets and op == "renew":
                assert await cap.renew(tickets[rid]) == model.renew(tickets[rid])
            elif rid in tickets:
                ticket = tickets[rid]
                done = await (cap.cancel(ticket) if op == "cancel" else cap.release(ticket, amount))
                assert done == model.release(ticket, amount, cancel=op == "cancel"), op
            state = (await caps[1 - proc].state([lid]))[lid]
            assert state.usage == model.usage(purge=False), (op, proc, rid, amount)
    finally:
        for client in clients:
            await client.aclose()
