"""Listings resting until a time: `exhausted` (a capacity cap reached) or `cooling` (the provider
answered 429 with Retry-After). Shown to sellers as the listing's status, and shared by processes.

The stored status (`active`, `paused`, `invalid`, ...) is what the seller or an admin set, or what
a rejected key caused; a rest is transient and ends by itself, so it is not written to Postgres
(which would need a second write to undo, and a crash in between would leave the listing
`exhausted` for ever). Instead each rest is one Redis key, `{<prefix>:l:<id>}:rest`, holding its
kind, end and reason and expiring a little after its end. The hot path writes it only when a rest
begins (rare: a refusal or a provider 429), never per request; every process also keeps its own
`exhausted_until` map so routing itself needs no Redis read.

Times are the injected clock's (seconds); the key's Redis TTL only bounds how long it lingers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from redis.asyncio import Redis

from aichat_gateway.marketplace.capacity import listing_tag

EXHAUSTED, COOLING = "exhausted", "cooling"
_LINGER_MS = 60_000


@dataclass(frozen=True, slots=True)
class Rest:
    status: str  # EXHAUSTED or COOLING
    until: float
    reason: str


def exhausted_reason(limit: str, until: float) -> str:
    return f"{limit} limit reached; resumes at {_iso(until)}"


def cooling_reason(retry_after: float, until: float) -> str:
    return f"the provider answered 429 and asked us to retry after {retry_after:g} s; resumes at {_iso(until)}"


def shown_status(stored: str, rest: Rest | None, now: float) -> tuple[str, str | None] | None:
    """The (status, reason) a seller sees instead of the stored one, or None to show it as stored.
    Only an `active` listing can be resting: a paused or invalid one is not routed at all."""
    if stored != "active" or rest is None or rest.until <= now:
        return None
    return rest.status, rest.reason


class Rests:
    def __init__(self, redis: Redis, prefix: str, clock: Callable[[], float]) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock

    def _key(self, listing_id: str) -> str:
        return f"{listing_tag(self._prefix, listing_id)}:rest"

    async def begin(self, listing_id: str, status: str, until: float, reason: str) -> None:
        ttl_ms = max(1, int((until - self._clock()) * 1000)) + _LINGER_MS
        value = orjson.dumps({"status": status, "until": until, "reason": reason})
        await self._redis.set(self._key(listing_id), value, px=ttl_ms)

    async def current(self, listing_ids: Sequence[str]) -> dict[str, Rest]:
        if not listing_ids:
            return {}
        raw = await self._redis.mget([self._key(i) for i in listing_ids])
        found: dict[str, Rest] = {}
        for listing_id, value in zip(listing_ids, raw, strict=True):
            if value is not None:
                data = orjson.loads(value)
                found[listing_id] = Rest(str(data["status"]), float(data["until"]), str(data["reason"]))
        return found


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
