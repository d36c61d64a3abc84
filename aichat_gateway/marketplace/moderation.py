"""An admin's moderation of listings: disable one with a reason its seller sees, enable it again.

The same change as an admin's `PATCH /api/marketplace/listings/{id}` with `status` and
`status_reason` (changes.py's allow-list: a seller cannot leave `disabled` by asking), recorded in
the seller's audit trail, and every process's routing snapshot is told at once.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import asyncpg

from aichat_gateway import audittrail
from aichat_gateway.marketplace import listings
from aichat_gateway.marketplace.changes import ListingChanges
from aichat_gateway.marketplace.errors import InvalidListing
from aichat_gateway.marketplace.services import MarketplaceServices

Decision = Literal["active", "disabled"]
DECISIONS: Final = ("active", "disabled")


def moderation(status: str, reason: str | None) -> ListingChanges:
    """Pure: an admin's decision as listing changes. Disabling needs a reason (the seller reads it);
    enabling clears it."""
    if status not in DECISIONS:
        raise InvalidListing("status must be active or disabled", param="status")
    text = (reason or "").strip()
    if status == "disabled" and not text:
        raise InvalidListing("say why: the seller sees this reason on the listing", param="status_reason")
    if len(text) > listings.MAX_REASON_CHARS or "\x00" in text:
        raise InvalidListing(
            f"status_reason must be at most {listings.MAX_REASON_CHARS} characters", param="status_reason"
        )
    return ListingChanges(status=status, status_reason=text if status == "disabled" else None)


async def record(db: audittrail.Executor, row: asyncpg.Record, admin_id: str, ip: str | None) -> None:
    """The decision in the seller's audit trail (also used by the API's admin PATCH)."""
    await audittrail.record(
        db,
        audittrail.ADMIN_LISTING,
        subject_id=str(row["seller_id"]),
        actor_id=admin_id,
        target_type="listing",
        target_id=row["public_id"],
        ip=ip,
        detail={"status": row["status"], "reason": row["status_reason"], "name": row["name"]},
    )


async def moderate(
    svc: MarketplaceServices, admin_id: str, listing_id: str, status: str, reason: str | None, *, ip: str | None
) -> asyncpg.Record:
    changes = moderation(status, reason)
    row = await listings.update_listing(svc.db, svc.vault, listing_id, None, changes)
    await record(svc.db, row, admin_id, ip)
    await svc.listings.announce_change()
    return row


async def all_listings(db: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every live listing with its seller's e-mail, for the admin's list (disabled ones first)."""
    rows = await db.fetch(
        """SELECT l.id, l.public_id, l.name, l.provider, l.status, l.status_reason, l.created_at,
                  u.email AS seller_email,
                  (SELECT string_agg(m.model, ', ' ORDER BY m.model) FROM listing_models m
                   WHERE m.listing_id = l.id) AS models
           FROM listings l LEFT JOIN users u ON u.id = l.seller_id
           WHERE l.deleted_at IS NULL
           ORDER BY (l.status = 'disabled') DESC, l.created_at DESC"""
    )
    return [dict(r) for r in rows]
