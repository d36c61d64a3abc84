"""Per-listing circuit breakers, shared by every gateway process through Redis.

Semantics (pybreaker's): closed; `fail_max` consecutive failures open it; after `reset_timeout`
one probe may go (half-open) while every other request is refused; the probe's success closes it,
its failure re-opens it with a fresh timer. A probe whose process died frees its slot after
`probe_timeout`. Stricter than pybreaker in one way: only the probe's own result (matched by its
token) decides a half-open breaker; results of requests let through before the breaker opened are
stale and ignored, so exactly one request decides.

Why shared in Redis rather than per process: with N processes behind a load balancer, per-process
breakers would each need `fail_max` failures of their own before opening (N x fail_max requests
to a dead listing, and N x the buyers who see a failover delay), each would send its own probes
(N probes every `reset_timeout` instead of one: "exactly one probe" cannot hold), and a process
started after an outage would know nothing. One state per listing in Redis gives one count, one
probe and one timer for the whole fleet, at no extra round trip for a closed breaker: `record_in`
rides in the request's finishing batch (proxy/finish.py) with the usage event and the capacity
release; a half-open breaker costs its one probe request a round trip of its own (`allow`, the
failover loop's gate).

Routing never waits for Redis: `BreakerView` keeps an in-process copy of every breaker that is not
plainly closed, updated from `<prefix>:breakers`, where the Lua script itself publishes every
change of mode or retry time (atomically with the change, so no change goes unannounced). The
router takes `view.unroutable()` once per request (only breakers that are not closed, so 1,000
candidates filter well within the routing budget) and looks each candidate up: absent is ROUTE (closed), SKIP (open, or
a probe is out) or PROBE (the timer ran out: take the slot with `allow`, which consults Redis
and may say no).

Staleness bound: while subscribed, one pub/sub hop after the script commits (well under a
millisecond on a LAN). Pub/sub can drop messages only by dropping the connection; the listener
notices a dead connection within 3 x `health_check_interval` (pings), re-subscribes and re-reads
every breaker, and the app also calls `refresh()` periodically as a safety net; so a change is
seen after at most min(refresh interval, 3 x health_check_interval) plus one round trip. A stale
"closed" sends a few extra requests to a failing listing; they fail over like any failure and are
ignored as stale. A stale "open" only delays traffic until the next notice.

State machine: `decide` (pure, unit-tested for every transition with an injected clock) and
lua/breaker.lua are twins; the integration tests drive both with random event sequences.
"""

from __future__ import annotations

import asyncio
import enum
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

from redis.asyncio import Redis

from aichat_gateway.marketplace.capacity import listing_tag
from aichat_gateway.redislua import LuaScript, Pending, Queue, as_int, raise_if_cancelling, run_one

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
EVENTS = ("allow", "success", "failure", "abandon")
HASH_TTL_MS = 7 * 86_400_000  # a breaker nobody touched for a week is forgotten (= closed)


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    fail_max: int = 5
    reset_ms: int = 30_000
    probe_ms: int = 60_000


@dataclass(frozen=True, slots=True)
class BreakerState:
    """One listing's breaker. `retry_at_ms`: when open, when a probe may go; when half-open, when
    the probe's slot expires. `version` grows with every published change (see breaker.lua)."""

    mode: str = CLOSED
    failures: int = 0
    retry_at_ms: int = 0
    probe: str = ""
    version: int = 0


@dataclass(frozen=True, slots=True)
class Transition:
    state: BreakerState
    allowed: bool = False  # for "allow": may the request go?
    is_probe: bool = False  # ... as the half-open probe
    published: bool = False  # a change of mode or retry time, announced to every process


def decide(state: BreakerState, event: str, now_ms: int, config: BreakerConfig, probe: str = "") -> Transition:
    """The breaker's state machine. `probe`: for "allow", the token a new probe would get; for
    results and "abandon", the token of the permit that made the request ('' if not a probe)."""
    if event not in EVENTS:
        raise ValueError(f"unknown breaker event {event!r}")
    if event == "allow" and not probe:
        raise ValueError("an allow needs the token of the probe it may become")
    if event == "allow":
        if state.mode == CLOSED:
            return Transition(state, allowed=True)
        if now_ms < state.retry_at_ms:
            return Transition(state)
        return _published(
            replace(state, mode=HALF_OPEN, probe=probe, retry_at_ms=now_ms + config.probe_ms), now_ms, True
        )
    if state.mode == CLOSED:
        if event == "success" and state.failures > 0:
            return Transition(replace(state, failures=0))
        if event == "failure":
            failures = state.failures + 1
            if failures >= config.fail_max:
                return _published(
                    replace(state, mode=OPEN, failures=failures, retry_at_ms=now_ms + config.reset_ms), now_ms
                )
            return Transition(replace(state, failures=failures))
        return Transition(state)
    if state.mode != HALF_OPEN or not probe or probe != state.probe:
        return Transition(state)  # a stale result: from a request let through before it opened
    if event == "success":
        return _published(replace(state, mode=CLOSED, failures=0, retry_at_ms=0, probe=""), now_ms)
    if event == "failure":
        return _published(replace(state, mode=OPEN, retry_at_ms=now_ms + config.reset_ms, probe=""), now_ms)
    return _published(replace(state, mode=OPEN, retry_at_ms=now_ms, probe=""), now_ms)  # abandon


def _published(state: BreakerState, now_ms: int, probe: bool = False) -> Transition:
    bumped = replace(state, version=max(state.version + 1, now_ms))
    return Transition(bumped, allowed=probe, is_probe=probe, published=True)


class Verdict(enum.Enum):
    ROUTE = "route"  # closed: send requests
    SKIP = "skip"  # open, or half-open with its probe out
    PROBE = "probe"  # the timer ran out: one request may try to become the probe (allow_in)


@dataclass(frozen=True, slots=True)
class Notice:
    """What every process learns about one breaker: the pub/sub message, or a row read back."""

    listing_id: str
    version: int
    mode: str
    retry_at_ms: int

    def encode(self) -> str:
        return f"{self.version} {self.mode} {self.retry_at_ms} {self.listing_id}"

    @classmethod
    def decode(cls, data: bytes | str) -> Notice:
        text = data.decode() if isinstance(data, bytes) else data
        version, mode, retry_at, listing_id = text.split(" ", 3)
        if mode not in (CLOSED, OPEN, HALF_OPEN) or not listing_id:
            raise ValueError(f"not a breaker notice: {text!r}")
        return cls(listing_id, int(version), mode, int(retry_at))


def verdict(notice: Notice | None, now_ms: int) -> Verdict:
    if notice is None or notice.mode == CLOSED:
        return Verdict.ROUTE
    return Verdict.PROBE if now_ms >= notice.retry_at_ms else Verdict.SKIP


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer of `allow`: truthy if the request may go. Pass `probe` back to `record`."""

    listing_id: str
    allowed: bool
    probe: str | None
    state: BreakerState

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True, slots=True)
class Reply:
    allowed: bool
    is_probe: bool
    state: BreakerState


def parse_reply(raw: Any) -> Reply:
    """breaker.lua's reply: {allowed, is_probe, mode, failures, retry_at, probe, version}."""
    allowed, is_probe, mode, failures, retry_at, probe, version = raw
    state = BreakerState(_text(mode), as_int(failures), as_int(retry_at), _text(probe), as_int(version))
    return Reply(as_int(allowed) == 1, as_int(is_probe) == 1, state)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_hash(raw: list[Any]) -> BreakerState:
    """HMGET mode failures retry_at probe version -> state (an absent hash is a fresh breaker)."""
    mode, failures, retry_at, probe, version = raw
    if mode is None:
        return BreakerState()
    return BreakerState(
        _text(mode), as_int(failures or 0), as_int(retry_at or 0), _text(probe or ""), as_int(version or 0)
    )


def breaker_key(prefix: str, listing_id: str) -> str:
    return f"{listing_tag(prefix, listing_id)}:breaker"


def breakers_channel(prefix: str) -> str:
    return f"{prefix}:breakers"


class Breakers:
    """The breakers of all listings. Never blocks the event loop: one Lua call per event.

    Record a result once the upstream's answer is known (status and first byte), not at the end of
    a long stream, so `probe_timeout` can stay near the time to first byte. What counts as a
    failure is the caller's choice (connect errors, timeouts, 5xx; a 429 is better left to
    capacity, since it says "busy", not "broken").
    """

    def __init__(
        self,
        redis: Redis,
        prefix: str,
        fail_max: int = 5,
        reset_timeout: float = 30.0,
        probe_timeout: float = 60.0,
        *,
        clock: Callable[[], float] = time.time,
        new_token: Callable[[], str] = lambda: secrets.token_hex(8),
    ) -> None:
        if fail_max < 1 or reset_timeout < 0 or probe_timeout <= 0:
            raise ValueError("fail_max >= 1, reset_timeout >= 0 and probe_timeout > 0 please")
        self.redis = redis
        self.config = BreakerConfig(fail_max, int(reset_timeout * 1000), int(probe_timeout * 1000))
        self.channel = breakers_channel(prefix)
        self._prefix = prefix
        self._clock = clock
        self._new_token = new_token
        self._script = LuaScript(redis, "aichat_gateway.marketplace", "breaker")

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _queue(self, pipe: Queue, listing_id: str, event: str, token: str) -> Pending[Reply]:
        c = self.config
        args = (event, self._now_ms(), token, c.fail_max, c.reset_ms, c.probe_ms, HASH_TTL_MS, self.channel, listing_id)
        return self._script.queue(pipe, [breaker_key(self._prefix, listing_id)], args, parse_reply)

    def allow_in(self, pipe: Queue, listing_id: str) -> Pending[Permit]:
        """Queue: may a request go? When the open timer has run out this takes the probe slot."""
        token = self._new_token()
        if not token:
            raise ValueError("new_token() returned an empty token")
        return self._queue(pipe, listing_id, "allow", token).map(
            lambda reply: Permit(listing_id, reply.allowed, token if reply.is_probe else None, reply.state)
        )

    async def allow(self, listing_id: str) -> Permit:
        return await run_one(self.redis, lambda pipe: self.allow_in(pipe, listing_id))

    def record_in(self, pipe: Queue, listing_id: str, success: bool, probe: str | None = None) -> Pending[BreakerState]:
        """Queue a request's outcome; `probe` is its permit's `probe` (None if it was not one)."""
        event = "success" if success else "failure"
        return self._queue(pipe, listing_id, event, probe or "").map(lambda reply: reply.state)

    async def record(self, listing_id: str, success: bool, probe: str | None = None) -> BreakerState:
        return await run_one(self.redis, lambda pipe: self.record_in(pipe, listing_id, success, probe))

    def abandon_in(self, pipe: Queue, listing_id: str, probe: str) -> Pending[BreakerState]:
        """Queue: the probe never reached the upstream (e.g. its hold was refused); free the slot now."""
        return self._queue(pipe, listing_id, "abandon", probe).map(lambda reply: reply.state)

    async def abandon(self, listing_id: str, probe: str) -> BreakerState:
        return await run_one(self.redis, lambda pipe: self.abandon_in(pipe, listing_id, probe))

    async def states(self, listing_ids: Iterable[str]) -> dict[str, BreakerState]:
        """Every listed breaker, read in one pipeline."""
        ids = list(dict.fromkeys(listing_ids))
        async with self.redis.pipeline(transaction=False) as pipe:
            for listing_id in ids:
                pipe.hmget(breaker_key(self._prefix, listing_id), ["mode", "failures", "retry_at", "probe", "version"])
            rows = await pipe.execute()
        return {listing_id: parse_hash(row) for listing_id, row in zip(ids, rows, strict=True)}


class BreakerView:
    """This process's copy of every breaker that is not plainly closed, for routing without Redis.

    Kept current by `listen()` (long-running, under the Supervisor) and `refresh()` (periodic safety
    net); see the module docstring for the staleness bound. `listing_ids` names the breakers to
    re-read (the snapshot's listings). While not subscribed the view keeps what it last knew.
    """

    def __init__(
        self,
        breakers: Breakers,
        listing_ids: Callable[[], Iterable[str]],
        *,
        clock: Callable[[], float] = time.time,
        on_change: Callable[[Notice], None] | None = None,
        health_check_interval: float = 5.0,
    ) -> None:
        self._breakers = breakers
        self._listing_ids = listing_ids
        self._clock = clock
        self._on_change = on_change
        self._health_check_interval = health_check_interval
        self._known: dict[str, Notice] = {}
        self._not_closed: dict[str, Notice] = {}  # the subset of _known the router must look at
        self._success_sent: dict[str, float] = {}  # listing id -> when this process last recorded one
        self.subscribed = asyncio.Event()

    def verdict(self, listing_id: str, now: float | None = None) -> Verdict:
        """O(1), no I/O: what the router should do with this listing right now."""
        return verdict(self._known.get(listing_id), int((self._clock() if now is None else now) * 1000))

    def unroutable(self, now: float | None = None) -> dict[str, Verdict]:
        """Every listing whose verdict is not ROUTE (SKIP or PROBE), in O(breakers not closed).

        For the router: one dict lookup per candidate (`.get(id)`: None means route) instead of a
        `verdict()` call each; 1,000 candidates cost a few dozen microseconds."""
        now_ms = int((self._clock() if now is None else now) * 1000)
        return {lid: verdict(n, now_ms) for lid, n in self._not_closed.items()}

    def success_worth_recording(self, listing_id: str, interval: float = 0.1) -> bool:
        """Successes of a closed breaker are recorded at most every `interval` seconds per listing
        and process: each one costs Redis a script run, and all it does is reset the failure
        count. So "fail_max consecutive failures" reads "fail_max failures with no success
        recorded in between" — at busy listings a stricter rule, never a looser one."""
        if listing_id in self._not_closed:
            return True
        now = self._clock()
        if now - self._success_sent.get(listing_id, -interval) < interval:
            return False
        self._success_sent[listing_id] = now
        return True

    def not_closed(self) -> dict[str, Notice]:
        return dict(self._not_closed)

    def apply(self, notice: Notice) -> bool:
        """Take a notice if it is newer than what we know; True if it changed the view."""
        known = self._known.get(notice.listing_id)
        if known is not None and known.version >= notice.version:
            return False
        self._set(notice.listing_id, notice)
        if self._on_change is not None:
            self._on_change(notice)
        return True

    def _set(self, listing_id: str, notice: Notice | None) -> None:
        if notice is None:
            self._known.pop(listing_id, None)
        else:
            self._known[listing_id] = notice
        if notice is None or notice.mode == CLOSED:
            self._not_closed.pop(listing_id, None)
        else:
            self._not_closed[listing_id] = notice

    def apply_state(self, listing_id: str, state: BreakerState) -> bool:
        """Take a state this process just read or changed (a permit, a record) without waiting."""
        return self.apply(Notice(listing_id, state.version, state.mode, state.retry_at_ms))

    async def refresh(self) -> None:
        """Re-read every listed breaker. A breaker gone from Redis (expired) is closed again, unless
        this view heard of it after the read began (then the notice is newer than the read)."""
        started_ms = int(self._clock() * 1000)
        states = await self._breakers.states(self._listing_ids())
        for listing_id, state in states.items():
            known = self._known.get(listing_id)
            if state.version == 0 and known is not None and known.version < started_ms:
                self._set(listing_id, None)
                if self._on_change is not None:
                    self._on_change(Notice(listing_id, 0, CLOSED, 0))
            elif state.version > 0:
                self.apply_state(listing_id, state)

    async def listen(self) -> None:
        """Long-running: apply every notice. Each (re)subscribe re-reads everything first-hand, so
        what was published while unsubscribed is not missed. Raises on Redis trouble, including a
        connection that stops answering pings, so the supervisor reconnects."""
        pubsub = self._breakers.redis.pubsub()
        try:
            await pubsub.subscribe(self._breakers.channel)
            raise_if_cancelling()
            last_heard, ping_sent = time.monotonic(), False
            while True:
                message = await pubsub.get_message(timeout=self._health_check_interval)
                raise_if_cancelling()
                now = time.monotonic()
                if message is None:
                    if now - last_heard >= 3 * self._health_check_interval:
                        raise ConnectionError("breaker channel stopped answering pings")
                    if not ping_sent:
                        await pubsub.ping()
                        ping_sent = True
                    continue
                last_heard, ping_sent = now, False
                await self._handle(message)
        finally:
            self.subscribed.clear()
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    async def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") == "subscribe":
            await self.refresh()
            self.subscribed.set()
        elif message.get("type") == "message":
            try:
                self.apply(Notice.decode(message["data"]))
            except ValueError:
                pass  # not ours to understand; the next refresh is authoritative anyway
