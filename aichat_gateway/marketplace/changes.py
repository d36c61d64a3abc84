"""What a listing's owner (or an admin) may change, decided as a pure function.

Updates accept an explicit allow-list of fields per role (no mass assignment). The owner may
rename, repoint, re-key, re-price, re-limit and pause or resume. An admin may rename, re-price,
re-limit, pause, disable and write the status reason of any listing, but never repoint or re-key
one that is not theirs: where a seller's key is sent is the seller's decision alone. Provider and
models are fixed once listed: list again to change them.

A stored key is only ever sent to the URL it was listed with: a new `base_url` needs the key to
use with it (`api_key`) in the same request, so the two travel together as one `NewEndpoint` and
the key check never has to decrypt a stored key for a URL it was not listed with.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from aichat_gateway.config.catalog import Catalog
from aichat_gateway.marketplace.errors import InvalidListing
from aichat_gateway.marketplace.listings import parse_limits, parse_pricing, required_string
from aichat_gateway.marketplace.pricing import Price

# Where the key goes and which key: the owner's alone.
ENDPOINT_FIELDS = frozenset({"base_url", "api_key"})
SELLER_FIELDS = frozenset({"name", "pricing", "limits", "status"}) | ENDPOINT_FIELDS
ADMIN_FIELDS = frozenset({"name", "pricing", "limits", "status", "status_reason"})
SELLER_STATUSES = frozenset({"active", "paused"})
ADMIN_STATUSES = SELLER_STATUSES | {"disabled"}
# Statuses a seller cannot leave by asking: an admin's decision, or a key that must be replaced.
_LOCKED_FOR_SELLER = {"disabled": "disabled by an administrator", "invalid": "its key was rejected"}


@dataclass(frozen=True)
class NewEndpoint:
    """A new key, and the URL to use it with (None: the listing's current URL). There is no way to
    say "a new URL with the stored key": a key is checked, and later sent, only where it was given."""

    api_key: str
    base_url: str | None = None


@dataclass(frozen=True)
class ListingChanges:
    name: str | None = None
    endpoint: NewEndpoint | None = None
    pricing: tuple[Decimal | None, Price | None] | None = None
    limits: dict[str, int] | None = None
    status: str | None = None
    status_reason: str | None = None

    @property
    def empty(self) -> bool:
        return self == ListingChanges()


def allowed_fields(*, is_owner: bool, is_admin: bool) -> frozenset[str]:
    return (SELLER_FIELDS if is_owner else frozenset()) | (ADMIN_FIELDS if is_admin else frozenset())


def parse_changes(
    body: object, *, is_owner: bool, is_admin: bool, current_status: str, models: list[str], catalog: Catalog
) -> ListingChanges:
    """Validate a PATCH body against the caller's allow-list and the listing as it is now."""
    if not isinstance(body, dict) or not body:
        raise InvalidListing("the request body must be a non-empty JSON object")
    allowed = allowed_fields(is_owner=is_owner, is_admin=is_admin)
    refused = sorted(set(body) - allowed)
    if refused:
        if refused[0] in ENDPOINT_FIELDS:
            raise InvalidListing(
                f"only the listing's owner may change {refused[0]!r} (where its key is sent, and which key)",
                param=refused[0],
            )
        raise InvalidListing(f"field {refused[0]!r} cannot be changed", param=refused[0])
    if "base_url" in body and "api_key" not in body:
        raise InvalidListing(
            "a new base_url needs api_key in the same request: a stored key is only ever sent to "
            "the URL it was listed with",
            param="api_key",
        )
    pricing = parse_pricing(body["pricing"]) if "pricing" in body else None
    if pricing is not None and pricing[1] is None:
        missing = [m for m in models if catalog.get(m) is None]
        if missing:
            raise InvalidListing(
                f"model {missing[0]!r} is not in the catalog, so this listing needs explicit prices",
                param="pricing",
            )
    status = body.get("status")
    if status is not None:
        statuses = ADMIN_STATUSES if is_admin else SELLER_STATUSES
        if not isinstance(status, str) or status not in statuses:
            raise InvalidListing(f"status must be one of {', '.join(sorted(statuses))}", param="status")
    if not is_admin and current_status in _LOCKED_FOR_SELLER and status is not None:
        if not (current_status == "invalid" and "api_key" in body):
            raise InvalidListing(
                f"this listing is {current_status} ({_LOCKED_FOR_SELLER[current_status]})", param="status"
            )
    reason = body.get("status_reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > 500 or "\x00" in reason):
        raise InvalidListing(
            "status_reason must be a string of at most 500 characters, without NUL", param="status_reason"
        )
    endpoint = None
    if "api_key" in body:
        endpoint = NewEndpoint(
            api_key=required_string(body, "api_key", 512),
            base_url=required_string(body, "base_url", 2048) if "base_url" in body else None,
        )
    return ListingChanges(
        name=required_string(body, "name", 100) if "name" in body else None,
        endpoint=endpoint,
        pricing=pricing,
        limits=parse_limits(body["limits"]) if "limits" in body else None,
        status=_resulting_status(status, current_status, "api_key" in body),
        status_reason=reason,
    )


def _resulting_status(requested: Any, current: str, new_key: bool) -> str | None:
    if requested is not None:
        return str(requested)
    if current == "invalid" and new_key:
        return "active"  # a replaced (and re-validated) key brings an invalid listing back
    return None
