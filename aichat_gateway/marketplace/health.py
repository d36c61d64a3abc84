"""How a seller's listings are doing right now: breaker, capacity used against limits, the last
hour's figures and the last recorded errors (the seller's dashboard page shows these).

Every figure comes from the store that already keeps it, read in one round trip each: the shared
breakers and capacity counters and per-minute stats in Redis, and the settled requests
(`usage_records`) in Postgres. A failed request is recorded there with the listing that answered
it last, its outcome and HTTP status; an attempt that failed and was then failed over to another
listing is not (it counts only in this listing's breaker and its last-hour success rate).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from aichat_gateway.marketplace.breaker import HALF_OPEN, OPEN, BreakerState
from aichat_gateway.marketplace.capacity import Capacity, CapacityState
from aichat_gateway.marketplace.services import MarketplaceServices
from aichat_gateway.marketplace.stats import ListingStats

RECENT_ERRORS: Final = 3
# Outcomes that are the buyer's doing, not the listing's.
_NOT_THE_LISTINGS: Final = ("ok", "client_error", "client_disconnected")
_RECENT_ERRORS_SQL: Final = """
SELECT l.id AS listing_id, e.created_at, e.outcome, e.status, e.model
FROM unnest($1::uuid[]) AS l(id)
CROSS JOIN LATERAL (
    SELECT u.created_at, u.outcome, u.status, u.model FROM usage_records u
    WHERE u.listing_id = l.id AND u.outcome <> ALL($2::text[])
    ORDER BY u.created_at DESC LIMIT $3
) e
ORDER BY l.id, e.created_at DESC
"""


class HealthServices(MarketplaceServices, Protocol):
    @property
    def capacity(self) -> Capacity: ...


@dataclass(frozen=True, slots=True)
class BreakerShown:
    state: str  # "closed", "open" or "half-open"
    failures: int  # consecutive failures counted (closed), or that opened it
    retry_at: datetime | None  # open: when one probe may try again
    fail_max: int  # consecutive failures that open it


@dataclass(frozen=True, slots=True)
class CapacityLine:
    name: str  # a listings.LIMIT_FIELDS name
    used: int
    limit: int | None  # None: no such limit


@dataclass(frozen=True, slots=True)
class RecentError:
    at: datetime
    outcome: str
    status: int
    model: str


@dataclass(frozen=True, slots=True)
class ListingHealth:
    breaker: BreakerShown
    capacity: tuple[CapacityLine, ...]
    last_hour: ListingStats
    recent_errors: tuple[RecentError, ...]


def breaker_shown(state: BreakerState, fail_max: int) -> BreakerShown:
    """Pure: a breaker as a seller reads it (the hash's `half_open` spelled as words are)."""
    if state.mode == OPEN:
        return BreakerShown("open", state.failures, _at(state.retry_at_ms), fail_max)
    if state.mode == HALF_OPEN:
        return BreakerShown("half-open", state.failures, None, fail_max)
    return BreakerShown("closed", state.failures, None, fail_max)


def capacity_lines(state: CapacityState) -> tuple[CapacityLine, ...]:
    """Pure: concurrency and the per-minute counters always (usage is worth seeing unlimited too),
    the daily and monthly caps only where the listing has them."""
    limits = state.limits
    lines = [CapacityLine(name, getattr(state.usage, name), limits.get(name)) for name in ("rpm", "tpm", "concurrency")]
    lines += [
        CapacityLine(name, getattr(state.usage, name), limit)
        for name in ("daily_tokens", "monthly_tokens")
        if (limit := limits.get(name)) is not None
    ]
    return tuple(lines)


def _at(epoch_ms: int) -> datetime | None:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC) if epoch_ms > 0 else None


async def listing_health(svc: HealthServices, rows: Sequence[Any]) -> dict[str, ListingHealth]:
    """Each listing's health, keyed by id (`rows`: listings.list_listings records)."""
    ids = [str(r["id"]) for r in rows]
    if not ids:
        return {}
    breakers = await svc.breakers.states(ids)
    capacity = await svc.capacity.state(ids, {str(r["id"]): r["limits"] for r in rows})
    last_hour = await svc.stats.last_hour(ids, svc.clock())
    errors: dict[str, list[RecentError]] = {i: [] for i in ids}
    found = await svc.db.fetch(_RECENT_ERRORS_SQL, [uuid.UUID(i) for i in ids], list(_NOT_THE_LISTINGS), RECENT_ERRORS)
    for row in found:
        error = RecentError(row["created_at"], row["outcome"], row["status"], row["model"])
        errors[str(row["listing_id"])].append(error)
    return {
        i: ListingHealth(
            breaker=breaker_shown(breakers[i], svc.breakers.config.fail_max),
            capacity=capacity_lines(capacity[i]),
            last_hour=last_hour[i],
            recent_errors=tuple(errors[i]),
        )
        for i in ids
    }
