"""The audit trail: account events stored with actor, time and target (migration 0011).

Every package records its own events here (accounts: logins and keys; marketplace: listings;
billing: top-ups and payouts; admin actions), so this module sits in the shared layer and knows
no package. An event is written on the connection the caller passes: inside the caller's
transaction when the action is (the event then exists exactly when the action does), or on the
pool after the fact. Nothing secret goes into `detail`: ids, names, amounts, reasons.

Who sees what: the owner of the account (`subject_id`) sees its events; admins see all of them.
"""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

# The actions, as `<thing>.<what happened>`; the dashboard names each in words (ACTION_LABELS).
LOGIN_SUCCEEDED = "login.succeeded"
LOGIN_FAILED = "login.failed"
LOGOUT = "session.ended"
PASSWORD_CHANGED = "password.changed"  # noqa: S105 (an action name)
KEY_CREATED = "key.created"
KEY_CHANGED = "key.changed"
KEY_REVOKED = "key.revoked"
LISTING_CREATED = "listing.created"
LISTING_CHANGED = "listing.changed"
LISTING_DELETED = "listing.deleted"
TOPUP_SUCCEEDED = "topup.succeeded"
PAYOUT_REQUESTED = "payout.requested"
PAYOUT_CHANGED = "payout.changed"
PAYOUT_ACCOUNT = "payout.account"
ADMIN_CREDIT = "admin.credit"
ADMIN_ROLE = "admin.role"
ADMIN_DISABLE = "admin.disable"
ADMIN_LISTING = "admin.listing"

ACTION_LABELS: dict[str, str] = {
    LOGIN_SUCCEEDED: "Logged in",
    LOGIN_FAILED: "Failed login",
    LOGOUT: "Logged out",
    PASSWORD_CHANGED: "Password changed",
    KEY_CREATED: "Key created",
    KEY_CHANGED: "Key changed",
    KEY_REVOKED: "Key revoked",
    LISTING_CREATED: "Listing created",
    LISTING_CHANGED: "Listing changed",
    LISTING_DELETED: "Listing deleted",
    TOPUP_SUCCEEDED: "Funds added",
    PAYOUT_REQUESTED: "Payout requested",
    PAYOUT_CHANGED: "Payout updated",
    PAYOUT_ACCOUNT: "Payout account linked",
    ADMIN_CREDIT: "Credit granted by an admin",
    ADMIN_ROLE: "Role changed by an admin",
    ADMIN_DISABLE: "Account disabled or enabled by an admin",
    ADMIN_LISTING: "Listing moderated by an admin",
}
MAX_PAGE = 200


class Executor(Protocol):
    """An asyncpg pool or connection (both have these)."""

    async def execute(self, query: str, *args: Any) -> str: ...
    async def fetch(self, query: str, *args: Any) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    occurred_at: datetime
    subject_id: str | None
    actor_id: str | None
    actor_email: str | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    detail: dict[str, Any]
    subject_email: str | None = None

    @property
    def label(self) -> str:
        return ACTION_LABELS.get(self.action, self.action)

    def public(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "occurred_at": self.occurred_at.isoformat(),
            "subject_id": self.subject_id,
            "subject_email": self.subject_email,
            "actor_id": self.actor_id,
            "actor_email": self.actor_email,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "ip": self.ip,
            "detail": self.detail,
        }


async def record(
    db: Executor,
    action: str,
    *,
    subject_id: str | None,
    actor_id: str | None = None,
    target_type: str | None = None,
    target_id: str | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    await db.execute(
        """INSERT INTO account_events (subject_id, actor_id, action, target_type, target_id, ip, detail)
           VALUES ($1, $2, $3, $4, $5, $6::inet, $7::text::jsonb)""",
        _uuid(subject_id),
        _uuid(actor_id),
        action,
        target_type,
        target_id,
        inet(ip),
        orjson.dumps(detail or {}).decode(),
    )


async def events(
    db: Executor,
    *,
    subject_id: str | None,
    everyone: bool = False,
    before_id: int | None = None,
    action_prefix: str | None = None,
    limit: int = 50,
) -> list[Event]:
    """Newest first. `subject_id`'s events, or with `everyone` (admins) all of them; `before_id`
    pages back; `action_prefix` ("login.", "key.") narrows to a kind."""
    if not everyone and subject_id is None:
        raise ValueError("a subject, or everyone for an admin")
    rows = await db.fetch(
        """SELECT e.id, e.occurred_at, e.subject_id, e.actor_id, u.email AS actor_email, e.action,
                  e.target_type, e.target_id, host(e.ip) AS ip, e.detail::text AS detail, s.email AS subject_email
           FROM account_events e LEFT JOIN users u ON u.id = e.actor_id LEFT JOIN users s ON s.id = e.subject_id
           WHERE ($1::boolean OR e.subject_id = $2)
             AND ($3::bigint IS NULL OR e.id < $3)
             AND ($4::text IS NULL OR starts_with(e.action, $4))
           ORDER BY e.id DESC
           LIMIT $5""",
        everyone,
        _uuid(subject_id),
        before_id,
        action_prefix,
        max(1, min(limit, MAX_PAGE)),
    )
    return [
        Event(
            id=row["id"],
            occurred_at=row["occurred_at"],
            subject_id=str(row["subject_id"]) if row["subject_id"] else None,
            actor_id=str(row["actor_id"]) if row["actor_id"] else None,
            actor_email=row["actor_email"],
            action=row["action"],
            target_type=row["target_type"],
            target_id=row["target_id"],
            ip=row["ip"],
            detail=_detail(row["detail"]),
            subject_email=row["subject_email"],
        )
        for row in rows
    ]


def inet(value: str | None) -> str | None:
    """Pure: the address if it is an IP address, else None. What the server saw as the client's
    address is not always one (an ASGI test client's "testclient", a proxy's placeholder), and an
    event must never fail for it: the column is `inet`."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None


def _detail(text: str) -> dict[str, Any]:
    """An event's detail object. A detail that is not an object (a JSON string: rows written by a
    development build that encoded it twice) is shown under "value" rather than failing the page."""
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def _uuid(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value else None
