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
from typing import TYPE_CHECKING, Literal, get_args

from aichat_gateway.config.catalog import Catalog
from aichat_gateway.marketplace.errors import InvalidListing
from aichat_gateway.marketplace.listings import first_unlisted
from aichat_gateway.marketplace.pricing import Price

if TYPE_CHECKING:
    from aichat_gateway.marketplace.schemas import ListingPatch

# Where the key goes and which key: the owner's alone.
ENDPOINT_FIELDS = frozenset({"base_url", "api_key"})
SELLER_FIELDS = frozenset({"name", "pricing", "limits", "status"}) | ENDPOINT_FIELDS
ADMIN_FIELDS = frozenset({"name", "pricing", "limits", "status", "status_reason"})
# Statuses anyone may ask for (schemas.ListingPatch reads these); `invalid` is the key check's.
SettableStatus = Literal["active", "paused", "disabled"]
SELLER_STATUSES = frozenset({"active", "paused"})
ADMIN_STATUSES = frozenset(get_args(SettableStatus))
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
    patch: ListingPatch, *, is_owner: bool, is_admin: bool, current_status: str, models: list[str], catalog: Catalog
) -> ListingChanges:
    """A PATCH body (read with schemas.ListingPatch: fields well-formed, null refused where it
    means nothing) against the caller's allow-list and the listing as it is now."""
    given = patch.model_fields_set
    if not given:
        raise InvalidListing("the request body must be a non-empty JSON object")
    allowed = allowed_fields(is_owner=is_owner, is_admin=is_admin)
    refused = sorted(given - allowed)
    if refused:
        if refused[0] in ENDPOINT_FIELDS:
            raise InvalidListing(
                f"only the listing's owner may change {refused[0]!r} (where its key is sent, and which key)",
                param=refused[0],
            )
        raise InvalidListing(f"field {refused[0]!r} cannot be changed", param=refused[0])
    if patch.base_url is not None and patch.api_key is None:
        raise InvalidListing(
            "a new base_url needs api_key in the same request: a stored key is only ever sent to "
            "the URL it was listed with",
            param="api_key",
        )
    pricing = patch.pricing.parsed() if patch.pricing is not None else None
    if pricing is not None and pricing[1] is None:
        missing = first_unlisted(models, catalog)
        if missing is not None:
            raise InvalidListing(
                f"model {missing!r} is not in the catalog, so this listing needs explicit prices",
                param="pricing",
            )
    status = patch.status
    if status is not None:
        statuses = ADMIN_STATUSES if is_admin else SELLER_STATUSES
        if status not in statuses:
            raise InvalidListing(f"status must be one of {', '.join(sorted(statuses))}", param="status")
    new_key = patch.api_key is not None
    if not is_admin and current_status in _LOCKED_FOR_SELLER and status is not None:
        if not (current_status == "invalid" and new_key):
            raise InvalidListing(
                f"this listing is {current_status} ({_LOCKED_FOR_SELLER[current_status]})", param="status"
            )
    limits = None
    if "limits" in given:
        limits = patch.limits.as_dict() if patch.limits is not None else {}  # null: no limits
    return ListingChanges(
        name=patch.name,
        endpoint=NewEndpoint(api_key=patch.api_key, base_url=patch.base_url) if patch.api_key is not None else None,
        pricing=pricing,
        limits=limits,
        status=_resulting_status(status, current_status, new_key),
        status_reason=patch.status_reason,
    )


def _resulting_status(requested: str | None, current: str, new_key: bool) -> str | None:
    if requested is not None:
        return requested
    if current == "invalid" and new_key:
        return "active"  # a replaced (and re-validated) key brings an invalid listing back
    return None
