"""Is this session JWT still a session? Answered per /api request from memory almost always.

A `RevocableCache` (revocable.py, the same pieces as the gateway-key cache) keyed by the token's
`jti`: a live session (its user and that user's role when loaded) is trusted for
`GATEWAY_SESSION_CACHE_TTL`, an ended or unknown one remembered for two seconds. Ending sessions
publishes on `{prefix}:sessions:ended`, and every process evicts within about a second:
`s:<jti>` for one session (logout, ending one from the list), `u:<user id>` for all of a user's
(a password change, `create-admin`, an admin). Eviction only means "ask Postgres again", so the
sessions a password change keeps simply reload.

The role is read from Postgres on every request, as before sessions were cached (one primary-key
read): a demoted admin loses the role and a deleted account its access at once. If that read
cannot reach Postgres, a cached live session answers with the role it was loaded with (its end
would have been pushed: it is only stale by age); a session this process never checked cannot be
answered (StoreUnavailable, 503).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from aichat_gateway.accounts.db import Executor
from aichat_gateway.accounts.errors import StoreUnavailable
from aichat_gateway.accounts.revocable import STORE_ERRORS, Events, RevocableCache
from aichat_gateway.accounts.tokens import SessionClaims
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.settings import Settings

log = get_logger(__name__)

_ONE = "s:"
_USER = "u:"
_EVENTS = Events(subscribed="session_ends_subscribed", malformed="session_end_malformed")
# A disabled account has no role: its sessions are refused even if one was started in the instant
# between the login's password check and the disabling (which ends the sessions it can see).
SESSION_QUERY = """SELECT s.user_id, u.role FROM sessions s JOIN users u ON u.id = s.user_id
   WHERE s.token_id = $1 AND s.revoked_at IS NULL AND u.disabled_at IS NULL"""
ROLE_QUERY = "SELECT role FROM users WHERE id = $1 AND disabled_at IS NULL"
_UNAVAILABLE = "cannot check the session right now; please retry shortly"


@dataclass(frozen=True, slots=True)
class LiveSession:
    user_id: str
    role: str  # when the session was loaded; the current one is read per request


def session_channel(settings: Settings) -> str:
    return f"{settings.redis_prefix}:sessions:ended"


async def announce_user_sessions_ended(redis: Redis, settings: Settings, user_id: str) -> bool:
    """For processes without a cache (the CLI): tell every gateway process to forget the user's
    sessions. Call after the end is committed. False (and logged) if Redis did not take it: then
    processes trust what they cached for at most GATEWAY_SESSION_CACHE_TTL."""
    try:
        await redis.publish(session_channel(settings), _USER + user_id)
    except (RedisError, OSError) as exc:
        log.error("session_end_publish_failed", error=type(exc).__name__)
        return False
    return True


class SessionCache(RevocableCache[str, LiveSession]):
    def __init__(
        self,
        db: Executor,
        redis: Redis,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        *,
        negative_ttl: float = 2.0,
        unsubscribed_ttl: float = 1.0,
        max_entries: int = 100_000,
        max_negative_entries: int = 10_000,
        max_concurrent_misses: int = 4,
        health_check_interval: float = 5.0,
    ) -> None:
        super().__init__(
            redis,
            session_channel(settings),
            settings.session_cache_ttl,
            clock,
            _EVENTS,
            negative_ttl=negative_ttl,
            unsubscribed_ttl=unsubscribed_ttl,
            max_entries=max_entries,
            max_negative_entries=max_negative_entries,
            max_concurrent_misses=max_concurrent_misses,
            health_check_interval=health_check_interval,
        )
        self._db = db

    async def role_of(self, claims: SessionClaims) -> str | None:
        """The current role of the user of a live session; None if the session ended (or is not
        this user's) or the user is gone. StoreUnavailable if Postgres cannot answer and nothing
        cached can."""
        entry = self._fresh_entry(claims.token_id)
        if entry is None:
            try:
                loaded = await self._load_shared(claims.token_id)
            except STORE_ERRORS as exc:
                known = self._known(claims.token_id)
                if known is None:
                    raise StoreUnavailable(_UNAVAILABLE) from None
                log.warning("session_served_from_stale_cache", user_id=known.user_id, error=type(exc).__name__)
                return known.role if known.user_id == claims.user_id else None
            # Just read with the session: the role is current.
            return loaded.role if loaded is not None and loaded.user_id == claims.user_id else None
        session = entry.value
        if session is None or session.user_id != claims.user_id:
            return None
        try:
            role: str | None = await self._db.fetchval(ROLE_QUERY, uuid.UUID(session.user_id))
        except STORE_ERRORS as exc:
            log.warning("session_served_from_stale_cache", user_id=session.user_id, error=type(exc).__name__)
            return session.role
        return role

    # ---- ending sessions ----------------------------------------------------------------------

    async def announce_ended(self, token_id: str) -> None:
        """Call after one session's end is committed: evict here, tell every other process."""
        self.evict(token_id)
        await self._publish(self._encode(token_id), "session_end_publish_failed")

    async def announce_user_ended(self, user_id: str) -> None:
        """Call after ending (some of) a user's sessions is committed: every process reloads them."""
        self._evict_user(user_id)
        await self._publish(_USER + user_id, "session_end_publish_failed")

    def _evict_user(self, user_id: str) -> None:
        self.evict_where(lambda session: session.user_id == user_id)

    # ---- RevocableCache -----------------------------------------------------------------------

    async def _query(self, key: str) -> LiveSession | None:
        row = await self._db.fetchrow(SESSION_QUERY, key)
        return LiveSession(user_id=str(row["user_id"]), role=row["role"]) if row is not None else None

    def _encode(self, key: str) -> str:
        return _ONE + key

    def _decode(self, text: str) -> str | None:
        return text.removeprefix(_ONE) if text.startswith(_ONE) and len(text) > len(_ONE) else None

    def _on_message(self, text: str) -> None:
        if text.startswith(_USER):
            self._evict_user(text.removeprefix(_USER))
        else:
            super()._on_message(text)
