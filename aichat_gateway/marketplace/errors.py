"""Errors of the marketplace package; proxy/edge.py maps each class to an HTTP status once.

MarketplaceError
├── InvalidListing     a listing field is malformed or not allowed (message and `param` say which)
│   ├── UnsafeUpstream the base URL breaks the upstream rules (https, public address, no redirects)
│   └── InvalidPreferences a buyer's routing preferences (`provider` in a request body) are malformed
├── UpstreamRefused    the provider rejected the key or answered unusably when we checked it
├── DuplicateKey       this provider key is already listed
├── ListingNotFound    no such listing *for this seller* (another seller's looks absent too)
├── NotAuthenticated   the caller presented no valid session
└── NotPermitted       a session cookie without its CSRF token on an unsafe method
"""

from __future__ import annotations


class MarketplaceError(Exception):
    code = "marketplace_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidListing(MarketplaceError):
    code = "invalid_listing"


class UnsafeUpstream(InvalidListing):
    code = "unsafe_upstream"


class InvalidPreferences(InvalidListing):
    """A subclass of InvalidListing so the edge already answers 400 with `param` naming the field."""

    code = "invalid_provider_preferences"


class UpstreamRefused(MarketplaceError):
    code = "upstream_refused"


class DuplicateKey(MarketplaceError):
    code = "duplicate_key"


class ListingNotFound(MarketplaceError):
    code = "listing_not_found"


class NotAuthenticated(MarketplaceError):
    code = "authentication_required"


class NotPermitted(MarketplaceError):
    code = "forbidden"
