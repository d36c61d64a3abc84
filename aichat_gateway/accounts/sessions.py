"""Server-side sessions (a repository over asyncpg): one row per session JWT, keyed by its `jti`.

A signed, unexpired token is a session only while its row says so: logout, a password change,
`create-admin` and an admin end sessions by setting `revoked_at`, and the authentication backend
checks the row (through the session cache, sessioncache.py) on every /api request. The token is
never stored; the row's `id` is the public handle of a session (a user's session list, ending one),
so nothing that identifies a token is ever shown.

Times come from the caller (the app's clock, or the token's own claims), never from Postgres'
`now()`, so tests move time instead of waiting.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aichat_gateway.accounts.db import Executor
from aichat_gateway.accounts.errors import NotFound
from aichat_gateway.accounts.tokens import SessionClaims

MAX_USER_AGENT_CHARS = 256
MAX_IP_CHARS = 64
# Rows stay this long after their token expired: long enough for "why was I logged out" questions,
# short enough that the table stays the size of the live sessions.
PRUNE_AFTER_SECONDS = 24 * 3600
PRUNE_BATCH = 5_000


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def printable(value: str | None, limit: int) -> str | None:
    """Pure: a header value fit to store and show: printable ASCII only, at most `limit` characters."""
    if value is None:
        return None
    kept = "".join(c for c in value[: limit * 4] if " " <= c <= "~").strip()[:limit]
    return kept or None


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    token_id: str  # never shown: the list marks the caller's own session with it
    created_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip: str | None

    def public(self, current_token_id: str | None) -> dict[str, object]:
        """The shape the API shows: no token, no token id."""
        return {
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "user_agent": self.user_agent,
            "ip": self.ip,
            "current": self.token_id == current_token_id,
        }


def parse_session_id(value: str) -> uuid.UUID:
    """A session id from a path; NotFound (as for another user's session) if it is not a UUID."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such session") from None


async def start(db: Executor, claims: SessionClaims, *, user_agent: str | None = None, ip: str | None = None) -> str:
    """Record a session just issued; its public id."""
    session_id = await db.fetchval(
        """INSERT INTO sessions (token_id, user_id, created_at, expires_at, user_agent, ip)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
        claims.token_id,
        uuid.UUID(claims.user_id),
        utc(claims.issued_at),
        utc(claims.expires_at),
        printable(user_agent, MAX_USER_AGENT_CHARS),
        printable(ip, MAX_IP_CHARS),
    )
    return str(session_id)


async def live(db: Executor, user_id: str, now: float) -> list[SessionInfo]:
    """The user's sessions that still work at `now`, newest first."""
    rows = await db.fetch(
        """SELECT id, token_id, created_at, expires_at, user_agent, ip FROM sessions
           WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2
           ORDER BY created_at DESC, id""",
        uuid.UUID(user_id),
        utc(now),
    )
    return [
        SessionInfo(
            id=str(row["id"]),
            token_id=row["token_id"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            user_agent=row["user_agent"],
            ip=row["ip"],
        )
        for row in rows
    ]


async def end_token(db: Executor, token_id: str, now: float) -> bool:
    """End the session of this token (logout); False if it had already ended."""
    ended = await db.fetchval(
        "UPDATE sessions SET revoked_at = $2 WHERE token_id = $1 AND revoked_at IS NULL RETURNING id",
        token_id,
        utc(now),
    )
    return ended is not None


async def end_one(db: Executor, user_id: str, session_id: str, now: float) -> str:
    """End one of the user's own sessions; its token id (to evict). Ending an ended one is fine;
    another user's session, or no such session, is NotFound."""
    row = await db.fetchrow(
        """UPDATE sessions SET revoked_at = coalesce(revoked_at, $3)
           WHERE id = $1 AND user_id = $2 RETURNING token_id""",
        parse_session_id(session_id),
        uuid.UUID(user_id),
        utc(now),
    )
    if row is None:
        raise NotFound("no such session")
    token_id: str = row["token_id"]
    return token_id


async def end_all(db: Executor, user_id: str, now: float, *, keep_token_id: str | None = None) -> int:
    """End every session of the user but the one of `keep_token_id`; how many were still live."""
    ended = await db.fetch(
        """UPDATE sessions SET revoked_at = $2
           WHERE user_id = $1 AND revoked_at IS NULL AND token_id IS DISTINCT FROM $3
           RETURNING expires_at""",
        uuid.UUID(user_id),
        utc(now),
        keep_token_id,
    )
    return sum(1 for row in ended if row["expires_at"] > utc(now))


async def prune(db: Executor, now: float, *, batch: int = PRUNE_BATCH) -> int:
    """Delete at most `batch` rows whose token expired over PRUNE_AFTER_SECONDS ago; how many went.

    Bounded so a periodic run is always cheap; a backlog goes over the next runs.
    """
    status: str = await db.execute(
        """DELETE FROM sessions WHERE id IN
           (SELECT id FROM sessions WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)""",
        utc(now - PRUNE_AFTER_SECONDS),
        batch,
    )
    return int(status.rsplit(" ", 1)[-1])


async def existing_user_id(db: Executor, user_id: str) -> str | None:
    """The user's id as Postgres spells it (lower-case, hyphenated), or None for no such user."""
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        return None
    found = await db.fetchval("SELECT id FROM users WHERE id = $1", uid)
    return str(found) if found is not None else None
