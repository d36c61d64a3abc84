"""The hot path's key check: SHA-256 of the presented key, answered from memory almost always.

A `RevocableCache` (revocable.py: TTLs, negative entries, bounded maps, coalesced and bounded
misses, pub/sub eviction) keyed by the key's hash:

- Positive answers are cached for `settings.key_cache_ttl`; negative ones for a couple of seconds.
- Misses go to Postgres with a parameterised query on the hash (the key never touches SQL text).
- Revocation: the revoking process publishes the hash on `{prefix}:keys:revoked`; every process's
  `listen_for_revocations()` evicts it. A change of a key's settings uses the same message
  (`announce_changed`): eviction only means "ask Postgres again", so a live key simply reloads
  with its new settings and a revoked one loads as None.
- `note_used` only writes a dict; `flush_last_used` persists the batch in one statement.

Session keys (sessionkeys.py) ride the same checks at no cost to ordinary keys on the hot path:
the query reads the key's session row (an ended or pruned session is not a live key), the cache
also listens on the sessions channel (`s:<jti>`, `u:<user id>`: sessioncache.py) and evicts the
session keys it holds for that session or user, and a session key's entry is backdated so it goes
stale no later than the session expires (then the query refuses it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from aichat_gateway.accounts.db import Executor
from aichat_gateway.accounts.errors import StoreUnavailable
from aichat_gateway.accounts.keyformat import hash_secret, looks_like_key
from aichat_gateway.accounts.revocable import STORE_ERRORS, Events, RevocableCache, entry_ttl, is_fresh
from aichat_gateway.accounts.sessioncache import session_channel
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.settings import Settings

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
    # Session keys only: the session's token id (`jti`) and when it expires (wall-clock seconds).
    session_token: str | None = None
    expires_at: float | None = None


def revocation_channel(settings: Settings) -> str:
    """The "forget this key" channel: revocations and settings changes alike (name kept for old processes)."""
    return f"{settings.redis_prefix}:keys:revoked"


# `routing::text`: decoded here, so the answer does not depend on the pool's jsonb codec. A key
# with an expiry is a session key: live only while its session row is and until it expires ($2, now).
# A key of a disabled account is no live key: read on a miss only, and disabling evicts the
# account's keys (`announce_changed`), so the hot path's hit stays a dict look-up.
PRINCIPAL_QUERY = """SELECT k.id, k.user_id, k.name, k.routing::text AS routing, k.daily_spend_cap_micro,
          k.monthly_spend_cap_micro, s.token_id AS session_token, k.expires_at
   FROM api_keys k JOIN users u ON u.id = k.user_id
        LEFT JOIN sessions s ON s.id = k.session_id AND s.revoked_at IS NULL
   WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND u.disabled_at IS NULL
     AND (k.expires_at IS NULL OR (s.id IS NOT NULL AND k.expires_at > $2))"""
_SESSION_ONE = "s:"
_SESSION_USER = "u:"


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
        session_token=row["session_token"],
        expires_at=row["expires_at"].timestamp() if row["expires_at"] is not None else None,
    )


def backdated(now: float, seconds_left: float, ttl: float) -> float:
    """Pure: the "stored at" time that makes an entry with `seconds_left` to live go stale by then
    (never later than a normal entry stored `now`)."""
    return min(now, now + seconds_left - ttl)


_EVENTS = Events(subscribed="key_revocations_subscribed", malformed="key_revocation_malformed")


class KeyCache(RevocableCache[bytes, KeyPrincipal]):
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
        super().__init__(
            redis,
            revocation_channel(settings),
            settings.key_cache_ttl,
            clock,
            _EVENTS,
            negative_ttl=negative_ttl,
            unsubscribed_ttl=unsubscribed_ttl,
            max_entries=max_entries,
            max_negative_entries=max_negative_entries,
            max_concurrent_misses=max_concurrent_misses,
            health_check_interval=health_check_interval,
            also_listen=(session_channel(settings),),
        )
        self._db = db
        self._wall_clock = wall_clock
        self._last_used: dict[str, float] = {}
        # The session keys among the cached entries, by hash: what a session end may evict.
        self._session_keys: dict[bytes, KeyPrincipal] = {}

    # ---- the hot path -------------------------------------------------------------------------

    async def lookup(self, secret: str) -> KeyPrincipal | None:
        """The key's owner, or None for anything that is not a live key of ours."""
        if not looks_like_key(secret):
            return None
        key_hash = hash_secret(secret)
        # RevocableCache._fresh_entry, inline: this runs on every /v1 request.
        now = self._clock()
        subscribed = self.subscribed.is_set()
        entry = self._positive.get(key_hash) or self._negative.get(key_hash)
        if entry is not None:
            ttl = entry_ttl(entry.value is not None, subscribed, self._ttl, self._negative_ttl, self._unsubscribed_ttl)
            if is_fresh(entry.stored_at, now, ttl):
                return entry.value
        try:
            return await self._load_shared(key_hash)
        except STORE_ERRORS as exc:
            # Postgres is down. A key we knew to be live stays usable: revocations are pushed
            # through Redis, so its entry was only stale by age, not by news. An unknown key
            # cannot be checked at all.
            known = self._known(key_hash)
            if known is not None and (known.expires_at is None or known.expires_at > self._wall_clock()):
                log.warning("key_served_from_stale_cache", key_id=known.key_id, error=type(exc).__name__)
                return known
            raise StoreUnavailable("The gateway cannot check API keys right now; please retry shortly.") from None

    def note_used(self, key_id: str) -> None:
        """Remember that a key was used; persisted by the next flush. No I/O here."""
        self._last_used[key_id] = self._wall_clock()

    # ---- RevocableCache -----------------------------------------------------------------------

    async def _query(self, key: bytes) -> KeyPrincipal | None:
        now = datetime.fromtimestamp(self._wall_clock(), UTC)
        return principal_from_row(await self._db.fetchrow(PRINCIPAL_QUERY, key, now))

    def _stored_at(self, value: KeyPrincipal | None) -> float:
        now = self._clock()
        if value is None or value.expires_at is None:
            return now
        return backdated(now, value.expires_at - self._wall_clock(), self._ttl)

    def _store(self, key: bytes, value: KeyPrincipal | None) -> None:
        super()._store(key, value)
        if value is not None and value.session_token is not None:
            self._session_keys[key] = value

    def _on_message(self, text: str) -> None:
        if text.startswith(_SESSION_ONE):
            token_id = text.removeprefix(_SESSION_ONE)
            self._evict_session_keys(lambda p: p.session_token == token_id)
        elif text.startswith(_SESSION_USER):
            user_id = text.removeprefix(_SESSION_USER)
            self._evict_session_keys(lambda p: p.user_id == user_id)
        else:
            super()._on_message(text)

    def _evict_session_keys(self, ended: Callable[[KeyPrincipal], bool]) -> None:
        """A session (or all of a user's) ended: forget its keys. Only session keys are looked at;
        the generation moves even when none is cached, so a lookup in flight cannot store one."""
        self._generation += 1
        for key_hash, principal in list(self._session_keys.items()):
            if ended(principal) or key_hash not in self._positive:
                del self._session_keys[key_hash]
                self._positive.pop(key_hash, None)

    def clear(self) -> None:
        super().clear()
        self._session_keys.clear()

    def _encode(self, key: bytes) -> str:
        return key.hex()

    def _decode(self, text: str) -> bytes | None:
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None

    # ---- revocation and changes ---------------------------------------------------------------

    async def announce_revoked(self, key_hash: bytes) -> None:
        """Call after the revocation is committed: evict here, tell every other process.

        A failed publish is logged, not raised: the database already says "revoked", and processes
        that cannot hear Redis trust their entries for at most `unsubscribed_ttl`.
        """
        self.evict(key_hash)
        await self._publish(self._encode(key_hash), "key_revocation_publish_failed")

    async def announce_changed(self, key_hash: bytes) -> None:
        """Call after a change of the key's settings is committed: every process reloads it.

        The same message as a revocation: a listener evicts, and the next lookup reads the row as
        it now is. A failed publish is logged, as for revocations (stale for `unsubscribed_ttl`).
        """
        self.evict(key_hash)
        await self._publish(self._encode(key_hash), "key_change_publish_failed")

    async def listen_for_revocations(self) -> None:
        """Long-running (under the Supervisor): evict keys revoked by any process (see `listen`)."""
        await self.listen()

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
