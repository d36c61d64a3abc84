"""An admin's decisions about accounts: finding them, changing their role, disabling them.

Shared by `/api/admin/users` (admin_api.py) and the dashboard's admin page, so both refuse the same
things in the same words. A change is one transaction: the row, the ended sessions (when an account
is disabled) and the audit trail's events commit together; only then are the running processes
told (sessions, and the account's keys, which the key cache then reloads as "no live key").

An admin cannot change their own role or disable themselves: the console would lock out the one
person who could undo it. Disabling keeps the account's keys, listings and money as they are;
enabling it again brings its keys back.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from aichat_gateway import audittrail
from aichat_gateway.accounts import sessions
from aichat_gateway.accounts.db import Executor, transaction
from aichat_gateway.accounts.errors import InvalidInput, NotFound
from aichat_gateway.accounts.services import AccountsServices
from aichat_gateway.accounts.tokens import ROLES
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)

MAX_QUERY_CHARS: Final = 254
PAGE: Final = 50


@dataclass(frozen=True, slots=True)
class AccountRow:
    """An account as the admin sees it (no password hash, no secrets)."""

    id: str
    email: str
    role: str
    created_at: datetime
    disabled_at: datetime | None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def public(self) -> dict[str, object]:
        return {
            "id": self.id,
            "email": self.email,
            "role": self.role,
            "disabled": self.disabled,
            "created_at": self.created_at.isoformat(),
            "disabled_at": self.disabled_at.isoformat() if self.disabled_at else None,
        }


@dataclass(frozen=True, slots=True)
class Change:
    """What an admin asked for: None leaves that part as it is."""

    role: str | None = None
    disabled: bool | None = None


@dataclass(frozen=True, slots=True)
class Changed:
    account: AccountRow
    role_changed: bool
    disabled_changed: bool
    sessions_ended: int
    key_hashes: tuple[bytes, ...]  # the account's live keys, to evict everywhere when it was (en|dis)abled


# ---- pure ----------------------------------------------------------------------------------------


def search_pattern(query: str) -> str:
    """Pure: a LIKE pattern matching e-mails that contain `query` (case-insensitively: the caller
    compares with lower(email)); LIKE's own wildcards in the query are matched literally."""
    text = query.strip().lower()
    if len(text) > MAX_QUERY_CHARS or "\x00" in text:  # Postgres text cannot hold NUL
        raise InvalidInput(f"query must be at most {MAX_QUERY_CHARS} characters, without NUL", param="query")
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def check_change(admin_id: str, user_id: str, change: Change) -> None:
    """Pure: refuse what an admin may not do (to their own account) or what means nothing."""
    if change.role is None and change.disabled is None:
        raise InvalidInput("say what to change: role, disabled, or both", param="role")
    if change.role is not None and change.role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(sorted(ROLES))}", param="role")
    if admin_id == user_id:
        if change.disabled:
            raise InvalidInput("you cannot disable your own account", param="disabled")
        if change.role is not None and change.role != "admin":
            raise InvalidInput("you cannot take the admin role from your own account", param="role")


# ---- Postgres ------------------------------------------------------------------------------------

_COLUMNS = "id, email, role, created_at, disabled_at"


def _account(row: asyncpg.Record) -> AccountRow:
    return AccountRow(
        id=str(row["id"]),
        email=row["email"],
        role=row["role"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
    )


async def search(db: Executor, query: str, *, limit: int = PAGE) -> list[AccountRow]:
    """Accounts whose e-mail contains `query` (all of them for ''), those starting with it first."""
    pattern = search_pattern(query)
    prefix = pattern[1:]  # "abc%": the e-mails that start with the query
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM users WHERE lower(email) LIKE $1
            ORDER BY lower(email) LIKE $2 DESC, lower(email) LIMIT $3""",  # noqa: S608  # constant columns
        pattern,
        prefix,
        max(1, min(limit, 200)),
    )
    return [_account(r) for r in rows]


async def get(db: Executor, user_id: str, *, for_update: bool = False) -> AccountRow:
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        raise NotFound("no such user", param="user_id") from None
    lock = " FOR UPDATE" if for_update else ""
    row = await db.fetchrow(f"SELECT {_COLUMNS} FROM users WHERE id = $1{lock}", uid)  # noqa: S608  # constants
    if row is None:
        raise NotFound("no such user", param="user_id")
    return _account(row)


async def change(
    db: Executor, admin_id: str, user_id: str, asked: Change, *, now: float, ip: str | None = None
) -> Changed:
    """Apply `asked` to the account (checked by check_change); the events and ended sessions commit with it."""
    check_change(admin_id, user_id, asked)
    async with transaction(db) as conn:
        # Locked: two admins changing one account at once each see what the other did.
        current = await get(conn, user_id, for_update=True)
        row = await conn.fetchrow(
            f"""UPDATE users SET role = coalesce($2, role),
                       disabled_at = CASE WHEN $3::boolean IS NULL THEN disabled_at
                                          WHEN $3 THEN coalesce(disabled_at, $4)
                                          ELSE NULL END
                WHERE id = $1 RETURNING {_COLUMNS}""",  # noqa: S608  # constant columns
            uuid.UUID(current.id),
            asked.role,
            asked.disabled,
            sessions.utc(now),
        )
        if row is None:
            raise NotFound("no such user", param="user_id")
        after = _account(row)
        role_changed = after.role != current.role
        disabled_changed = after.disabled != current.disabled
        ended = 0
        hashes: tuple[bytes, ...] = ()
        if disabled_changed:
            if after.disabled:
                ended = await sessions.end_all(conn, after.id, now)
            keys = await conn.fetch(
                "SELECT key_hash FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL", uuid.UUID(after.id)
            )
            hashes = tuple(bytes(k["key_hash"]) for k in keys)
            await audittrail.record(
                conn,
                audittrail.ADMIN_DISABLE,
                subject_id=after.id,
                actor_id=admin_id,
                target_type="user",
                target_id=after.id,
                ip=ip,
                detail={"disabled": after.disabled, "sessions_ended": ended},
            )
        if role_changed:
            await audittrail.record(
                conn,
                audittrail.ADMIN_ROLE,
                subject_id=after.id,
                actor_id=admin_id,
                target_type="user",
                target_id=after.id,
                ip=ip,
                detail={"from": current.role, "to": after.role},
            )
    return Changed(after, role_changed, disabled_changed, ended, hashes)


async def change_and_announce(
    svc: AccountsServices, admin_id: str, user_id: str, asked: Change, *, ip: str | None = None
) -> AccountRow:
    """`change`, then tell every process: a disabled account's sessions and keys stop working within
    about a second (an enabled one's keys are asked about again at once)."""
    done = await change(svc.db, admin_id, user_id, asked, now=svc.clock(), ip=ip)
    if done.disabled_changed:
        if done.account.disabled:
            await svc.sessions.announce_user_ended(done.account.id)
        for key_hash in done.key_hashes:
            await svc.keys.announce_changed(key_hash)
    log.info(
        "account_changed_by_admin",
        user_id=done.account.id,
        admin_id=admin_id,
        role=done.account.role,
        disabled=done.account.disabled,
        sessions_ended=done.sessions_ended,
    )
    return done.account
