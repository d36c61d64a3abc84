"""The hot path's key check: SHA-256 of the presented key, answered from memory almost always.

- Positive answers are cached for `settings.key_cache_ttl`; negative ones for a couple of seconds,
  so the same bad key repeated in a flood costs one query, and both maps are size-bounded.
- Misses go to Postgres with a parameterised query on the hash (the key never touches SQL text),
  at most `max_concurrent_misses` at a time and one query per distinct key in flight, so a flood
  of distinct bad keys cannot take every pool connection.
- Revocation: the revoking process publishes the hash on `{prefix}:keys:revoked`; every process's
  `listen_for_revocations()` evicts it. A change of a key's settings uses the same message
  (`announce_changed`): eviction only means "ask Postgres again", so a live key simply reloads
  with its new settings and a revoked one loads as None. While that listener is not subscribed (start-up, Redis
  trouble) positive entries are trusted for only `unsubscribed_ttl` (1 s), and each (re)subscribe
  clears the cache, so a missed message can never keep a revoked key alive beyond a second.
- `note_used` only writes a dict; `flush_last_used` persists the batch in one statement.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aichat_gateway.accounts.db import Executor
from aichat_gateway.accounts.errors import StoreUnavailable
from aichat_gateway.accounts.keyformat import hash_secret, looks_like_key
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.settings import Settings
from aichat_gateway.redislua import raise_if_cancelling

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class KeyPrincipal:
    """Who a valid gateway key belongs to, and the key's settings. Holds no secret.

    `routing` is the key's default `provider` object (a plain dict, as a request body's would be;
    shared by every request of the key, so never mutate it); the caps are micro-USD per UTC day
    and UTC month. None means "none" for each.
    """

    key_id: str
    user_id: str
    name: str
    routing: Mapping[str, Any] | None = None
    daily_cap_micro: int | None = None
    monthly_cap_micro: int | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    principal: KeyPrincipal | None
    stored_at: float


def revocation_channel(settings: Settings) -> str:
    """The "forget this key" channel: revocations and settings changes alike (name kept for old processes)."""
    return f"{settings.redis_prefix}:keys:revoked"


# `routing::text`: decoded here, so the answer does not depend on the pool's jsonb codec.
PRINCIPAL_QUERY = """SELECT id, user_id, name, routing::text AS routing, daily_spend_cap_micro, monthly_spend_cap_micro
   FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"""


def principal_from_row(row: asyncpg.Record | None) -> KeyPrincipal | None:
    """Pure: a row of PRINCIPAL_QUERY (or none: not a live key) → the principal."""
    if row is None:
        return None
    routing = orjson.loads(row["routing"]) if row["routing"] is not None else None
    return KeyPrincipal(
        key_id=str(row["id"]),
        user_id=str(row["user_id"]),
        name=row["name"],
        routing=routing,
        daily_cap_micro=row["daily_spend_cap_micro"],
        monthly_cap_micro=row["monthly_spend_cap_micro"],
    )


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


class KeyCache:
    def __init__(
        self,
        db: Executor,
        redis: Redis,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        negative_ttl: float = 2.0,
        unsubscribed_ttl: float = 1.0,
        max_entries: int = 100_000,
        max_negative_entries: int = 10_000,
        max_concurrent_misses: int = 4,
        health_check_interval: float = 5.0,
    ) -> None:
        self._db = db
        self._redis = redis
        self._channel = revocation_channel(settings)
        self._ttl = settings.key_cache_ttl
        self._clock = clock
        self._wall_clock = wall_clock
        self._negative_ttl = negative_ttl
        self._unsubscribed_ttl = unsubscribed_ttl
        self._max_entries = max_entries
        self._max_negative = max_negative_entries
        self._health_check_interval = health_check_interval
        self._positive: dict[bytes, _Entry] = {}
        self._negative: dict[bytes, _Entry] = {}
        self._inflight: dict[bytes, asyncio.Task[KeyPrincipal | None]] = {}
        self._miss_slots = asyncio.Semaphore(max_concurrent_misses)
        # Bumped by every eviction: a query that started before a revocation must not cache its answer.
        self._generation = 0
        self._last_used: dict[str, float] = {}
        self.subscribed = asyncio.Event()

    # ---- the hot path -------------------------------------------------------------------------

    async def lookup(self, secret: str) -> KeyPrincipal | None:
        """The key's owner, or None for anything that is not a live key of ours."""
        if not looks_like_key(secret):
            return None
        key_hash = hash_secret(secret)
        now = self._clock()
        subscribed = self.subscribed.is_set()
        entry = self._positive.get(key_hash) or self._negative.get(key_hash)
        if entry is not None:
            ttl = entry_ttl(
                entry.principal is not None, subscribed, self._ttl, self._negative_ttl, self._unsubscribed_ttl
            )
            if is_fresh(entry.stored_at, now, ttl):
                return entry.principal
        task = self._inflight.get(key_hash)
        if task is None:
            task = asyncio.create_task(self._load(key_hash))
            self._inflight[key_hash] = task
            task.add_done_callback(lambda t: self._load_done(key_hash, t))
        # Shielded: one caller giving up (client disconnect) must not cancel the others' answer.
        try:
            return await asyncio.shield(task)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            # Postgres is down. A key we knew to be live stays usable: revocations are pushed
            # through Redis, so its entry was only stale by age, not by news. An unknown key
            # cannot be checked at all.
            known = self._positive.get(key_hash)
            if known is not None and known.principal is not None:
                log.warning("key_served_from_stale_cache", key_id=known.principal.key_id, error=type(exc).__name__)
                return known.principal
            raise StoreUnavailable("The gateway cannot check API keys right now; please retry shortly.") from None

    def note_used(self, key_id: str) -> None:
        """Remember that a key was used; persisted by the next flush. No I/O here."""
        self._last_used[key_id] = self._wall_clock()

    # ---- misses -------------------------------------------------------------------------------

    async def _load(self, key_hash: bytes) -> KeyPrincipal | None:
        generation = self._generation
        async with self._miss_slots:
            row = await self._db.fetchrow(PRINCIPAL_QUERY, key_hash)
        principal = principal_from_row(row)
        if generation == self._generation:
            self._store(key_hash, principal)
        return principal

    def _load_done(self, key_hash: bytes, task: asyncio.Task[KeyPrincipal | None]) -> None:
        self._inflight.pop(key_hash, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody awaited is not reported as lost

    def _store(self, key_hash: bytes, principal: KeyPrincipal | None) -> None:
        if principal is not None:
            target, limit = self._positive, self._max_entries
        else:
            target, limit = self._negative, self._max_negative
        target.pop(key_hash, None)
        while len(target) >= limit:
            del target[next(iter(target))]  # oldest first: dicts keep insertion order
        target[key_hash] = _Entry(principal, self._clock())
        # A key is in at most one of the two maps.
        (self._negative if principal else self._positive).pop(key_hash, None)

    # ---- revocation and changes ---------------------------------------------------------------

    def evict(self, key_hash: bytes) -> None:
        self._generation += 1
        self._positive.pop(key_hash, None)
        self._negative.pop(key_hash, None)

    def clear(self) -> None:
        self._generation += 1
        self._positive.clear()
        self._negative.clear()

    async def announce_revoked(self, key_hash: bytes) -> None:
        """Call after the revocation is committed: evict here, tell every other process.

        A failed publish is logged, not raised: the database already says "revoked", and processes
        that cannot hear Redis trust their entries for at most `unsubscribed_ttl`.
        """
        await self._announce(key_hash, "key_revocation_publish_failed")

    async def announce_changed(self, key_hash: bytes) -> None:
        """Call after a change of the key's settings is committed: every process reloads it.

        The same message as a revocation: a listener evicts, and the next lookup reads the row as
        it now is. A failed publish is logged, as for revocations (stale for `unsubscribed_ttl`).
        """
        await self._announce(key_hash, "key_change_publish_failed")

    async def _announce(self, key_hash: bytes, failure_event: str) -> None:
        self.evict(key_hash)
        try:
            await self._redis.publish(self._channel, key_hash.hex())
        except (RedisError, OSError) as exc:
            log.error(failure_event, error=type(exc).__name__)

    async def listen_for_revocations(self) -> None:
        """Long-running (under the Supervisor): evict keys revoked by any process.

        Raises on Redis trouble, including a connection that stops answering pings, so the
        supervisor reconnects; the cache is cleared on every successful (re)subscribe.
        """
        pubsub = self._redis.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            raise_if_cancelling()
            last_heard = self._clock()
            ping_sent = False
            while True:
                message = await pubsub.get_message(timeout=self._health_check_interval)
                raise_if_cancelling()
                now = self._clock()
                if message is None:
                    if now - last_heard >= 3 * self._health_check_interval:
                        raise ConnectionError("revocation channel stopped answering pings")
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
            log.info("key_revocations_subscribed")
        elif kind == "message":
            data = message.get("data")
            text = data.decode("ascii", "replace") if isinstance(data, bytes) else str(data)
            try:
                key_hash = bytes.fromhex(text)
            except ValueError:
                log.warning("key_revocation_malformed")
                return
            self.evict(key_hash)

    # ---- last-used bookkeeping ----------------------------------------------------------------

    async def flush_last_used(self) -> None:
        """Write every noted use in one statement; on failure keep them for the next flush."""
        if not self._last_used:
            return
        pending, self._last_used = self._last_used, {}
        ids = [uuid.UUID(key_id) for key_id in pending]
        times = [datetime.fromtimestamp(t, UTC) for t in pending.values()]
        try:
            await self._db.execute(
                """UPDATE api_keys AS k SET last_used_at = GREATEST(k.last_used_at, u.used_at)
                   FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, used_at)
                   WHERE k.id = u.id""",
                ids,
                times,
            )
        except BaseException:
            for key_id, used_at in pending.items():
                self._last_used[key_id] = max(used_at, self._last_used.get(key_id, used_at))
            raise
