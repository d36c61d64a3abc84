"""A listing's life as its seller (or an admin) drives it: create, change, delete, and how it is shown.

The JSON API (api.py) and the dashboard's seller pages both call these, so a form refuses what the
API refuses, in the same words, and every action lands in the audit trail once, whoever asked:
`listing.created`, `listing.changed`, `listing.deleted`, with the owner as subject and the caller as
actor (an admin changing a seller's listing is the actor; the seller still sees the event).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from aichat_gateway import audittrail
from aichat_gateway.marketplace import listings, moderation
from aichat_gateway.marketplace.changes import NewEndpoint, parse_changes
from aichat_gateway.marketplace.resting import shown_status
from aichat_gateway.marketplace.schemas import ListingCreate, ListingPatch
from aichat_gateway.marketplace.services import MarketplaceServices
from aichat_gateway.marketplace.urls import validate_upstream_url


@dataclass(frozen=True, slots=True)
class Caller:
    """Who acts: a seller on their own listings, or an admin on anyone's."""

    user_id: str
    is_admin: bool = False
    ip: str | None = None

    @property
    def owner_scope(self) -> str | None:
        """The owner every query is limited to (None: an admin sees all)."""
        return None if self.is_admin else self.user_id


async def create(svc: MarketplaceServices, caller: Caller, body: ListingCreate) -> asyncpg.Record:
    """List an endpoint: the catalog check, the upstream URL rules, the key checked with its provider."""
    new = listings.new_listing(body, svc.catalog)
    base_url = await validate_upstream_url(new.base_url, svc.settings.allow_private_upstreams)
    await svc.key_checker(new.provider, base_url, new.api_key)
    row = await listings.insert_listing(svc.db, svc.vault, caller.user_id, replace(new, base_url=base_url))
    await svc.listings.announce_change()
    await _record(svc, audittrail.LISTING_CREATED, caller, row, {"name": row["name"], "public_id": row["public_id"]})
    return row


async def change(svc: MarketplaceServices, caller: Caller, listing_id: str, patch: ListingPatch) -> asyncpg.Record:
    """Apply a PATCH body under the caller's allow-list (changes.py); a new key is checked first."""
    current = await listings.get_listing(svc.db, listing_id, caller.owner_scope)
    changes = parse_changes(
        patch,
        is_owner=str(current["seller_id"]) == caller.user_id,
        is_admin=caller.is_admin,
        current_status=current["status"],
        models=[m["model"] for m in current["models"]],
        catalog=svc.catalog,
    )
    if changes.endpoint is not None:
        changes = replace(changes, endpoint=await _checked_endpoint(svc, current, changes.endpoint))
    row = await listings.update_listing(svc.db, svc.vault, str(current["id"]), caller.owner_scope, changes)
    await svc.listings.announce_change()
    detail: dict[str, Any] = {"name": row["name"], "fields": sorted(patch.model_fields_set)}
    if row["status"] != current["status"]:
        detail["status"] = row["status"]
    await _record(svc, audittrail.LISTING_CHANGED, caller, row, detail)
    if caller.is_admin and str(current["seller_id"]) != caller.user_id and changes.status is not None:
        await moderation.record(svc.db, row, caller.user_id, caller.ip)
    return row


async def _checked_endpoint(svc: MarketplaceServices, current: asyncpg.Record, endpoint: NewEndpoint) -> NewEndpoint:
    """The request's new key, checked with the provider where it will be sent: the new URL that
    came with it, else the listing's own. Only this request's key is ever sent (no stored key is
    decrypted here), and the URL it was checked with is written with it, so a concurrent change
    cannot pair the key with another URL."""
    if endpoint.base_url is None:
        base_url = str(current["base_url"])
    else:
        base_url = await validate_upstream_url(endpoint.base_url, svc.settings.allow_private_upstreams)
    await svc.key_checker(current["provider"], base_url, endpoint.api_key)
    return NewEndpoint(api_key=endpoint.api_key, base_url=base_url)


async def delete(svc: MarketplaceServices, caller: Caller, listing_id: str) -> None:
    current = await listings.get_listing(svc.db, listing_id, caller.owner_scope)
    await listings.delete_listing(svc.db, str(current["id"]), caller.owner_scope)
    await svc.listings.announce_change()
    await _record(
        svc, audittrail.LISTING_DELETED, caller, current, {"name": current["name"], "public_id": current["public_id"]}
    )


async def _record(
    svc: MarketplaceServices, action: str, caller: Caller, row: asyncpg.Record, detail: dict[str, Any]
) -> None:
    await audittrail.record(
        svc.db,
        action,
        subject_id=str(row["seller_id"]),
        actor_id=caller.user_id,
        target_type="listing",
        target_id=str(row["id"]),
        ip=caller.ip,
        detail=detail,
    )


async def shown_statuses(svc: MarketplaceServices, rows: list[asyncpg.Record]) -> dict[str, tuple[str, str | None]]:
    """Each listing's (status, reason) as its seller sees it: an active one resting (a capacity cap
    reached, or the provider asked us to wait) is shown `exhausted` or `cooling` with why."""
    ids = [str(r["id"]) for r in rows]
    rests = await svc.rests.current(ids)
    now = svc.clock()
    shown: dict[str, tuple[str, str | None]] = {}
    for row, listing_id in zip(rows, ids, strict=True):
        override = shown_status(row["status"], rests.get(listing_id), now)
        shown[listing_id] = override if override is not None else (row["status"], row["status_reason"])
    return shown
