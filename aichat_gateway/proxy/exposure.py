"""Which served requests lost their usage event when Redis lost its data.

Usage events wait in Redis' stream until the settlement worker commits them. A Redis without
persistence that restarts loses the unsettled ones: those requests were served and cannot be
billed. Each process remembers the events it recorded in the last minute (`RecentEvents`: request
id, buyer, cost; bounded by age and count, about 200 bytes each). When it learns Redis lost its data,
the ones neither settled in Postgres nor present in the new stream are exactly the lost ones: each
is logged (`usage_event_lost`, with buyer and cost) and counted
(`gateway_usage_events_lost_total`), so an operator knows the exposure to the micro-dollar. A
process that died with Redis takes its memory along; its share is the settlement backlog gauge's
last value.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import asyncpg
from prometheus_client import Counter
from redis.asyncio import Redis

from aichat_gateway.billing.meter import decode_entry
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)

# Settlement normally commits an event within a second; a minute covers any ordinary backlog while
# keeping memory at (requests per second x 60) small records. A longer backlog (Postgres down) is
# what `gateway_settlement_backlog` shows.
KEEP_SECONDS = 60.0
KEEP_EVENTS = 100_000


@dataclass(frozen=True, slots=True)
class Recorded:
    request_id: str
    buyer_id: str
    cost_micro: int
    at: float


class RecentEvents:
    def __init__(self, max_events: int = KEEP_EVENTS, max_age: float = KEEP_SECONDS) -> None:
        self._events: collections.deque[Recorded] = collections.deque(maxlen=max_events)
        self._max_age = max_age

    def add(self, request_id: str, buyer_id: str, cost_micro: int, at: float) -> None:
        events = self._events
        while events and at - events[0].at > self._max_age:  # forget as we go: memory stays flat
            events.popleft()
        events.append(Recorded(request_id, buyer_id, cost_micro, at))

    def __len__(self) -> int:
        return len(self._events)

    def take(self, now: float) -> list[Recorded]:
        """Everything remembered and young enough to matter; forgets it all."""
        kept = [e for e in self._events if now - e.at <= self._max_age]
        self._events.clear()
        return kept


def lost(recorded: Sequence[Recorded], settled: Iterable[str], in_new_stream: Iterable[str]) -> list[Recorded]:
    """Pure: the recorded events that reached neither Postgres nor the new stream."""
    safe = set(settled) | set(in_new_stream)
    return [e for e in recorded if e.request_id not in safe]


async def account_for_loss(
    recent: RecentEvents,
    clock: Callable[[], float],
    db: asyncpg.Pool,
    redis: Redis,
    stream: str,
    lost_counter: Counter,
) -> list[Recorded]:
    """Find, log and count this process's events that Redis lost."""
    recorded = recent.take(clock())
    if not recorded:
        return []
    ids = [e.request_id for e in recorded]
    rows = await db.fetch("SELECT request_id FROM usage_records WHERE request_id = ANY($1)", ids)
    # redis-py types replies for clients that decode them; ours does not: bytes field maps.
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(stream, count=len(ids) + 10_000)  # type: ignore[assignment]
    present = [decode_entry(fields).get("request_id", "") for _, fields in entries]
    gone = lost(recorded, (r["request_id"] for r in rows), present)
    for event in gone:
        log.error(
            "usage_event_lost", lost_request_id=event.request_id, buyer_id=event.buyer_id, cost_micro=event.cost_micro
        )
    lost_counter.inc(len(gone))
    log.warning(
        "usage_loss_accounted",
        checked=len(recorded),
        lost=len(gone),
        lost_cost_micro=sum(e.cost_micro for e in gone),
    )
    return gone
