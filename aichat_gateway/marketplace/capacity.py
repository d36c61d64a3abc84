"""Per-listing capacity (RPM, TPM, concurrency, daily and monthly tokens), counted in Redis.

Why Redis and Lua: limits must hold across every gateway process on every host, so the counters
live in Redis and each check-and-record is one Lua script (atomic: no two processes can both see
"49 of 50" and both take the 50th slot). Every key of a listing sits in one hash slot,
`{<prefix>:l:<listing id>}:...`, so the scripts also run on Redis Cluster. Lua does only the
atomic part; which keys, which windows, which limit refused and when it resets are decided by the
pure functions below, which the unit tests cover exhaustively.

Windows are fixed, not sliding: RPM and TPM count per UTC minute, the caps per UTC day and month.
Fixed windows are exact (the offers page can say "32 of 50 this minute"), O(1) in memory (a
sliding log keeps one entry per request and cannot sum tokens in O(1)), and give a precise reset
time, so the router can mark a listing exhausted until exactly then. The price: a burst straddling
a minute boundary can pass up to twice the RPM within a few seconds; an upstream that objects
answers 429, which the hot path fails over on anyway. Tokens are counted at `take` with the
caller's estimate (worst case: prompt + max_tokens) and corrected at `release` by
actual - estimated, in the windows of the take.

Concurrency is a zset of request ids scored by lease deadline. A crashed process never releases,
so its leases simply expire (`lease` seconds, renewable for long streams) and every take first
drops expired ones. Every admitted request holds a lease even without a concurrency limit: that
makes `release` idempotent (it corrects counters only if it removed the lease) and lets `state`
report in-flight requests for least-busy routing.

Clocks: `now` comes from the injected clock and is passed to Lua, so tests never sleep. Gateway
clocks should agree (NTP); a process whose clock is δ late keeps counting in the old window for δ.

Round trips: the hot path has two (hold, settle), so `take_in`, `release_in` and `renew_in` queue
their script on the caller's pipeline and return a `Pending` (see `LuaScript` for why not
redis-py's `register_script`, and for NOSCRIPT after a Redis restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from aichat_gateway.redislua import LuaScript, Pending, Queue, as_int, run_one

MINUTE_MS = 60_000
DAY_MS = 86_400_000
GRACE_MS = 60_000  # counters outlive their window a little, so gateway clock skew never loses one
TOKEN_COUNTERS = ("tpm", "daily_tokens", "monthly_tokens")
COUNTERS = ("rpm", *TOKEN_COUNTERS)


def _is_one(raw: Any) -> bool:
    return as_int(raw) == 1


# ---- limits, usage, windows (pure) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Limits:
    """A listing's limits; None means "no such limit". Field names are listings.LIMIT_FIELDS."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None

    @classmethod
    def of(cls, value: Limits | Mapping[str, Any] | None) -> Limits:
        """From a listing's stored `limits` dict (or a Limits); unknown names are a bug: ValueError."""
        if value is None:
            return cls()
        if isinstance(value, Limits):
            return value
        names = {f.name for f in fields(cls)}
        for name, limit in value.items():
            if name not in names:
                raise ValueError(f"unknown capacity limit {name!r}")
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
                raise ValueError(f"capacity limit {name} must be a non-negative integer")
        return cls(**{name: value[name] for name in names if value.get(name) is not None})

    def get(self, name: str) -> int | None:
        limit: int | None = getattr(self, name)
        return limit

    def items(self) -> list[tuple[str, int]]:
        return [(f.name, limit) for f in fields(self) if (limit := getattr(self, f.name)) is not None]


@dataclass(frozen=True, slots=True)
class Usage:
    """What a listing has used in its current windows (before the request being decided)."""

    concurrency: int = 0  # leases in flight
    rpm: int = 0
    tpm: int = 0
    daily_tokens: int = 0
    monthly_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Windows:
    """The fixed windows `now_ms` falls in: ids for key names and their ends (unix ms, exclusive)."""

    minute: int  # minutes since the epoch
    day: str  # UTC YYYYMMDD
    month: str  # UTC YYYYMM
    minute_end_ms: int
    day_end_ms: int
    month_end_ms: int


def windows(now_ms: int) -> Windows:
    minute = now_ms // MINUTE_MS
    day_index = now_ms // DAY_MS
    date = datetime.fromtimestamp(day_index * DAY_MS / 1000, UTC)
    next_month = datetime(date.year + date.month // 12, date.month % 12 + 1, 1, tzinfo=UTC)
    return Windows(
        minute=minute,
        day=date.strftime("%Y%m%d"),
        month=date.strftime("%Y%m"),
        minute_end_ms=(minute + 1) * MINUTE_MS,
        day_end_ms=(day_index + 1) * DAY_MS,
        month_end_ms=int(next_month.timestamp()) * 1000,
    )


def listing_tag(prefix: str, listing_id: str) -> str:
    """The hash tag every key of one listing starts with (capacity and breaker alike)."""
    if "{" in listing_id or "}" in listing_id or "{" in prefix or "}" in prefix:
        raise ValueError("listing ids and prefixes may not contain braces (they would break the hash tag)")
    return f"{{{prefix}:l:{listing_id}}}"


@dataclass(frozen=True, slots=True)
class CapacityKeys:
    leases: str
    rpm: str
    tpm: str
    daily_tokens: str
    monthly_tokens: str

    def counter(self, name: str) -> str:
        key: str = getattr(self, name)
        return key


def capacity_keys(prefix: str, listing_id: str, w: Windows) -> CapacityKeys:
    tag = listing_tag(prefix, listing_id)
    return CapacityKeys(
        leases=f"{tag}:leases",
        rpm=f"{tag}:rpm:{w.minute}",
        tpm=f"{tag}:tpm:{w.minute}",
        daily_tokens=f"{tag}:tpd:{w.day}",
        monthly_tokens=f"{tag}:tpmo:{w.month}",
    )


def violations(usage: Usage, limits: Limits, estimated_tokens: int) -> tuple[str, ...]:
    """Every limit this request would exceed, in LIMIT_FIELDS order. The Lua applies the same rule."""
    adding = {"concurrency": 1, "rpm": 1}
    return tuple(
        name for name, limit in limits.items() if getattr(usage, name) + adding.get(name, estimated_tokens) > limit
    )


def too_large(limits: Limits, estimated_tokens: int) -> str | None:
    """A token limit this request exceeds on its own: no window will ever admit it."""
    for name in TOKEN_COUNTERS:
        limit = limits.get(name)
        if limit is not None and estimated_tokens > limit:
            return name
    return None


def resets_at_ms(limit: str, w: Windows, now_ms: int, earliest_lease_ms: int) -> int:
    """When `limit` stops refusing at the latest. For concurrency that is the soonest lease expiry,
    an upper bound: leases are normally released long before."""
    if limit in ("rpm", "tpm"):
        return w.minute_end_ms
    if limit == "daily_tokens":
        return w.day_end_ms
    if limit == "monthly_tokens":
        return w.month_end_ms
    return max(earliest_lease_ms, now_ms)


def refusing_limit(refused: Sequence[str], w: Windows, now_ms: int, earliest_lease_ms: int) -> str:
    """Of several refusing limits, the one that resets last (the listing is useless until then)."""
    return max(refused, key=lambda name: resets_at_ms(name, w, now_ms, earliest_lease_ms))


# ---- admission and tickets ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ticket:
    """Proof of an admitted take: hand it to `release` (or `renew`). Plain data, safe to keep."""

    listing_id: str
    request_id: str
    estimated_tokens: int
    taken_at_ms: int
    counters: tuple[str, ...]  # the counters this take recorded (the limited ones)


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    ticket: Ticket | None = None
    limit: str | None = None  # the limit that refused
    retry_after: float | None = None  # seconds until it resets; None: never, for this request
    usage: Usage = Usage()  # as seen before this request (zero if Redis was not asked)

    @property
    def exhausts_listing(self) -> bool:
        """True if the router should skip the listing for everyone until `retry_after` has passed.

        Not for `concurrency` (slots free on every release, usually long before the lease bound) and
        not for a request too large for a limit (a smaller request may still fit)."""
        return not self.admitted and self.retry_after is not None and self.limit != "concurrency"


@dataclass(frozen=True, slots=True)
class TakePlan:
    keys: tuple[str, ...]
    args: tuple[str | int, ...]
    limits: Limits
    estimated_tokens: int
    now_ms: int
    windows: Windows
    ticket: Ticket


def plan_take(
    prefix: str, listing_id: str, limits: Limits, estimated_tokens: int, request_id: str, now_ms: int, lease_ms: int
) -> TakePlan:
    """The keys and ARGV of capacity_take.lua (see its header for their order)."""
    if estimated_tokens < 0:
        raise ValueError("estimated_tokens must not be negative")
    w = windows(now_ms)
    k = capacity_keys(prefix, listing_id, w)

    def limit(name: str) -> int:
        value = limits.get(name)
        return -1 if value is None else value

    ttl = (
        lease_ms + GRACE_MS,
        w.minute_end_ms - now_ms + GRACE_MS,
        w.day_end_ms - now_ms + GRACE_MS,
        w.month_end_ms - now_ms + GRACE_MS,
    )
    limited = tuple(limit(name) for name in ("concurrency", *COUNTERS))
    args: tuple[str | int, ...] = (now_ms, now_ms + lease_ms, request_id, estimated_tokens, *limited, *ttl)
    counters = tuple(name for name in COUNTERS if limits.get(name) is not None)
    ticket = Ticket(listing_id, request_id, estimated_tokens, now_ms, counters)
    return TakePlan(
        (k.leases, k.rpm, k.tpm, k.daily_tokens, k.monthly_tokens), args, limits, estimated_tokens, now_ms, w, ticket
    )


def parse_take(raw: Sequence[Any], plan: TakePlan) -> Admission:
    status, *figures, earliest = (as_int(x) for x in raw)
    usage = Usage(*figures)
    if status in (1, 2):
        return Admission(True, ticket=plan.ticket, usage=usage)
    refused = violations(usage, plan.limits, plan.estimated_tokens)
    if not refused:
        raise RuntimeError("capacity_take.lua refused a request that violations() admits: they disagree")
    name = refusing_limit(refused, plan.windows, plan.now_ms, earliest)
    reset = resets_at_ms(name, plan.windows, plan.now_ms, earliest)
    return Admission(False, limit=name, retry_after=(reset - plan.now_ms) / 1000, usage=usage)


def release_plan(prefix: str, ticket: Ticket, actual_tokens: int, cancel: bool) -> tuple[list[str], list[str | int]]:
    """Keys and ARGV of capacity_release.lua: lease, then each recorded counter with its delta.

    A release corrects tokens by actual - estimated; a cancel (the request never reached the
    upstream, e.g. the buyer's hold refused) also gives back its RPM count."""
    k = capacity_keys(prefix, ticket.listing_id, windows(ticket.taken_at_ms))
    keys: list[str] = [k.leases]
    args: list[str | int] = [ticket.request_id]
    for name in ticket.counters:
        delta = (-1 if cancel else 0) if name == "rpm" else actual_tokens - ticket.estimated_tokens
        if delta:
            keys.append(k.counter(name))
            args.append(delta)
    return keys, args


@dataclass(frozen=True, slots=True)
class CapacityState:
    """A listing's usage against its limits right now, for the offers page and least-busy routing."""

    listing_id: str
    usage: Usage
    limits: Limits

    def remaining(self) -> dict[str, int]:
        return {name: max(0, limit - getattr(self.usage, name)) for name, limit in self.limits.items()}

    def headroom(self) -> float:
        """The tightest limit's unused fraction (1.0 when unlimited): higher is less busy."""
        fractions = [max(0.0, 1 - getattr(self.usage, n) / limit) if limit else 0.0 for n, limit in self.limits.items()]
        return min(fractions, default=1.0)

    def refusing(self, estimated_tokens: int = 0) -> tuple[str, ...]:
        return violations(self.usage, self.limits, estimated_tokens)


# ---- the Redis shell ---------------------------------------------------------------------------


class Capacity:
    """Capacity counters of all listings, shared by every gateway process through Redis.

    `lease` bounds how long a crashed process's request keeps a concurrency slot; it must exceed
    the longest request unless the caller `renew`s (e.g. every lease/3 while a stream runs).
    """

    def __init__(
        self, redis: Redis, prefix: str, clock: Callable[[], float] = time.time, *, lease: float = 120.0
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._lease_ms = int(lease * 1000)
        self._take = LuaScript(redis, "aichat_gateway.marketplace", "capacity_take")
        self._release = LuaScript(redis, "aichat_gateway.marketplace", "capacity_release")
        self._renew = LuaScript(redis, "aichat_gateway.marketplace", "capacity_renew")

    async def restore(self, listing_id: str, used: Usage) -> None:
        """Seed this window's counters with what Postgres says was used, if Redis has none (it lost
        its data): SET NX, so counts taken since are never overwritten. In-flight leases are not
        restored; they were lost with the processes' state and free themselves anyway."""
        now = self._now_ms()
        w = windows(now)
        keys = capacity_keys(self._prefix, listing_id, w)
        plan = (
            (keys.rpm, used.rpm, w.minute_end_ms),
            (keys.tpm, used.tpm, w.minute_end_ms),
            (keys.daily_tokens, used.daily_tokens, w.day_end_ms),
            (keys.monthly_tokens, used.monthly_tokens, w.month_end_ms),
        )
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, value, end_ms in plan:
                if value > 0:
                    pipe.set(key, value, nx=True, px=end_ms - now + GRACE_MS)
            await pipe.execute()

    @property
    def lease_seconds(self) -> float:
        return self._lease_ms / 1000

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def take_in(
        self,
        pipe: Queue,
        listing_id: str,
        limits: Limits | Mapping[str, Any] | None,
        estimated_tokens: int,
        request_id: str,
    ) -> Pending[Admission]:
        """Queue an atomic take on `pipe`. Too large for a limit: refused without queueing anything."""
        parsed = Limits.of(limits)
        if (name := too_large(parsed, estimated_tokens)) is not None:
            return Pending.ready(Admission(False, limit=name, retry_after=None))
        plan = plan_take(self._prefix, listing_id, parsed, estimated_tokens, request_id, self._now_ms(), self._lease_ms)
        return self._take.queue(pipe, plan.keys, plan.args, lambda raw: parse_take(raw, plan))

    async def take(
        self, listing_id: str, limits: Limits | Mapping[str, Any] | None, estimated_tokens: int, request_id: str
    ) -> Admission:
        return await run_one(self._redis, lambda p: self.take_in(p, listing_id, limits, estimated_tokens, request_id))

    def release_in(self, pipe: Queue, ticket: Ticket, actual_tokens: int) -> Pending[bool]:
        """Queue: free the lease and correct tokens by actual - estimated. True if this call did it."""
        keys, args = release_plan(self._prefix, ticket, actual_tokens, cancel=False)
        return self._release.queue(pipe, keys, args, _is_one)

    async def release(self, ticket: Ticket, actual_tokens: int) -> bool:
        return await run_one(self._redis, lambda p: self.release_in(p, ticket, actual_tokens))

    def cancel_in(self, pipe: Queue, ticket: Ticket) -> Pending[bool]:
        """Queue: undo the take entirely (request, tokens and lease), for a request never sent."""
        keys, args = release_plan(self._prefix, ticket, 0, cancel=True)
        return self._release.queue(pipe, keys, args, _is_one)

    async def cancel(self, ticket: Ticket) -> bool:
        return await run_one(self._redis, lambda p: self.cancel_in(p, ticket))

    def renew_in(self, pipe: Queue, ticket: Ticket) -> Pending[bool]:
        """Queue: extend a live lease to now + lease. False if it had already expired or been released."""
        now = self._now_ms()
        leases = capacity_keys(self._prefix, ticket.listing_id, windows(ticket.taken_at_ms)).leases
        args = (ticket.request_id, now, now + self._lease_ms, self._lease_ms + GRACE_MS)
        return self._renew.queue(pipe, [leases], args, _is_one)

    async def renew(self, ticket: Ticket) -> bool:
        return await run_one(self._redis, lambda p: self.renew_in(p, ticket))

    async def state(
        self, listing_ids: Iterable[str], limits: Mapping[str, Limits | Mapping[str, Any] | None] | None = None
    ) -> dict[str, CapacityState]:
        """Usage of each listing in its current windows, read in one pipeline (no script)."""
        now = self._now_ms()
        w = windows(now)
        ids = list(dict.fromkeys(listing_ids))
        async with self._redis.pipeline(transaction=False) as pipe:
            for listing_id in ids:
                k = capacity_keys(self._prefix, listing_id, w)
                pipe.zcount(k.leases, f"({now}", "+inf")
                for name in COUNTERS:
                    pipe.get(k.counter(name))
            raw = await pipe.execute()
        width = 1 + len(COUNTERS)
        return {
            listing_id: CapacityState(
                listing_id,
                Usage(*(0 if x is None else as_int(x) for x in raw[i * width : (i + 1) * width])),
                Limits.of((limits or {}).get(listing_id)),
            )
            for i, listing_id in enumerate(ids)
        }
