"""An in-process cache of things that can be revoked (gateway keys, sessions), kept honest by Redis pub/sub.

The pieces both caches share, taken out of the key cache so the session cache reuses them:

- Positive answers are trusted for `ttl`; negative ones ("no such live thing") for a couple of
  seconds, so the same bad credential repeated in a flood costs one query; both maps are
  size-bounded (oldest first out).
- Misses go to Postgres at most `max_concurrent_misses` at a time and one query per distinct key
  in flight, so a flood of distinct bad credentials cannot take every pool connection.
- Revocation: the revoking process evicts and publishes on the cache's channel; every process's
  `listen()` evicts too. Eviction only means "ask Postgres again". While the listener is not
  subscribed (start-up, Redis trouble) positive entries are trusted for only `unsubscribed_ttl`
  (1 s), and each (re)subscribe clears the cache, so a missed message can never keep a revoked
  thing alive beyond a second.

A subclass says how to query one key (`_query`) and how a key travels in a message (`_encode`,
`_decode`); it reads entries itself (`_fresh_entry`, or inline on a hot path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aichat_gateway.config.logging import get_logger
from aichat_gateway.redislua import raise_if_cancelling

log = get_logger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# What a query that cannot reach Postgres raises: a cache may then answer from a known entry.
STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


def is_fresh(stored_at: float, now: float, ttl: float) -> bool:
    """Pure: may an entry stored at `stored_at` still be served at `now`?"""
    return 0 <= now - stored_at < ttl


def entry_ttl(
    entry_is_positive: bool, subscribed: bool, ttl: float, negative_ttl: float, unsubscribed_ttl: float
) -> float:
    """Pure: how long an entry is trusted. Negatives are short; positives shrink while deaf to revocations."""
    if not entry_is_positive:
        return negative_ttl
    return ttl if subscribed else min(ttl, unsubscribed_ttl)


@dataclass(frozen=True, slots=True)
class Entry(Generic[V]):
    value: V | None  # None: known not to be live
    stored_at: float


@dataclass(frozen=True, slots=True)
class Events:
    """The log events of one cache, so each keeps the names its operators know."""

    subscribed: str
    malformed: str


class RevocableCache(Generic[K, V]):
    def __init__(
        self,
        redis: Redis,
        channel: str,
        ttl: float,
        clock: Callable[[], float],
        events: Events,
        *,
        negative_ttl: float = 2.0,
        unsubscribed_ttl: float = 1.0,
        max_entries: int = 100_000,
        max_negative_entries: int = 10_000,
        max_concurrent_misses: int = 4,
        health_check_interval: float = 5.0,
        also_listen: tuple[str, ...] = (),
    ) -> None:
        self._redis = redis
        self._channel = channel
        # Further channels whose messages `_on_message` understands (one subscription for all).
        self._also_listen = also_listen
        self._ttl = ttl
        self._clock = clock
        self._events = events
        self._negative_ttl = negative_ttl
        self._unsubscribed_ttl = unsubscribed_ttl
        self._max_entries = max_entries
        self._max_negative = max_negative_entries
        self._health_check_interval = health_check_interval
        self._positive: dict[K, Entry[V]] = {}
        self._negative: dict[K, Entry[V]] = {}
        self._inflight: dict[K, asyncio.Task[V | None]] = {}
        self._miss_slots = asyncio.Semaphore(max_concurrent_misses)
        # Bumped by every eviction: a query that started before a revocation must not cache its answer.
        self._generation = 0
        self.subscribed = asyncio.Event()

    # ---- what a subclass provides -------------------------------------------------------------

    async def _query(self, key: K) -> V | None:
        raise NotImplementedError

    def _encode(self, key: K) -> str:
        raise NotImplementedError

    def _decode(self, text: str) -> K | None:
        """The key a message names, or None if the message is malformed."""
        raise NotImplementedError

    def _stored_at(self, value: V | None) -> float:
        """When an entry counts as stored: now; a subclass may backdate one so it goes stale sooner."""
        return self._clock()

    # ---- reading ------------------------------------------------------------------------------

    def _fresh_entry(self, key: K) -> Entry[V] | None:
        """The entry for `key` if it may still be served, else None (ask `_load_shared`)."""
        entry = self._positive.get(key) or self._negative.get(key)
        if entry is None:
            return None
        ttl = entry_ttl(
            entry.value is not None, self.subscribed.is_set(), self._ttl, self._negative_ttl, self._unsubscribed_ttl
        )
        return entry if is_fresh(entry.stored_at, self._clock(), ttl) else None

    def _known(self, key: K) -> V | None:
        """The last positive answer for `key`, however old: what a Postgres outage may serve."""
        entry = self._positive.get(key)
        return entry.value if entry is not None else None

    async def _load_shared(self, key: K) -> V | None:
        """Ask Postgres, one query per key in flight however many callers wait; STORE_ERRORS propagate."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._load(key))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._load_done(key, t))
        # Shielded: one caller giving up (client disconnect) must not cancel the others' answer.
        return await asyncio.shield(task)

    async def _load(self, key: K) -> V | None:
        generation = self._generation
        async with self._miss_slots:
            value = await self._query(key)
        if generation == self._generation:
            self._store(key, value)
        return value

    def _load_done(self, key: K, task: asyncio.Task[V | None]) -> None:
        self._inflight.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited is not reported as lost

    def _store(self, key: K, value: V | None) -> None:
        if value is not None:
            target, limit = self._positive, self._max_entries
        else:
            target, limit = self._negative, self._max_negative
        target.pop(key, None)
        while len(target) >= limit:
            del target[next(iter(target))]  # oldest first: dicts keep insertion order
        target[key] = Entry(value, self._stored_at(value))
        # A key is in at most one of the two maps.
        (self._negative if value is not None else self._positive).pop(key, None)

    # ---- revocation ---------------------------------------------------------------------------

    def evict(self, key: K) -> None:
        self._generation += 1
        self._positive.pop(key, None)
        self._negative.pop(key, None)

    def evict_where(self, matches: Callable[[V], bool]) -> None:
        """Evict every positive entry whose value matches (e.g. all sessions of one user)."""
        self._generation += 1
        for key in [k for k, entry in self._positive.items() if entry.value is not None and matches(entry.value)]:
            del self._positive[key]

    def clear(self) -> None:
        self._generation += 1
        self._positive.clear()
        self._negative.clear()

    async def _publish(self, message: str, failure_event: str) -> None:
        """Tell every other process. Call after the change is committed and evicted here.

        A failed publish is logged, not raised: the database already has the change, and processes
        that cannot hear Redis trust their entries for at most `unsubscribed_ttl`.
        """
        try:
            await self._redis.publish(self._channel, message)
        except (RedisError, OSError) as exc:
            log.error(failure_event, error=type(exc).__name__)

    async def listen(self) -> None:
        """Long-running (under the Supervisor): evict what any process announces.

        Raises on Redis trouble, including a connection that stops answering pings, so the
        supervisor reconnects; the cache is cleared on every successful (re)subscribe.
        """
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel, *self._also_listen)
            raise_if_cancelling()
            last_heard = self._clock()
            ping_sent = False
            while True:
                message = await pubsub.get_message(timeout=self._health_check_interval)
                raise_if_cancelling()
                now = self._clock()
                if message is None:
                    if now - last_heard >= 3 * self._health_check_interval:
                        raise ConnectionError(f"{self._channel} stopped answering pings")
                    if not ping_sent:
                        await pubsub.ping()
                        raise_if_cancelling()
                        ping_sent = True
                    continue
                last_heard, ping_sent = now, False
                self._handle(message)
        finally:
            self.subscribed.clear()
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated

    def _handle(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        if kind == "subscribe":
            # Subscribed from here on, so nothing published later can be missed; anything published
            # while we were away is dealt with by forgetting everything we knew.
            self.clear()
            self.subscribed.set()
            log.info(self._events.subscribed)
        elif kind == "message":
            data = message.get("data")
            self._on_message(data.decode("ascii", "replace") if isinstance(data, bytes) else str(data))

    def _on_message(self, text: str) -> None:
        key = self._decode(text)
        if key is None:
            log.warning(self._events.malformed)
            return
        self.evict(key)
