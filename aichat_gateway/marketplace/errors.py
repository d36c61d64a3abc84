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

_SHOWN_CHARS = 64


def shown(value: object) -> str:
    """A caller's value as an error message may quote it: a short string's repr, else its type.
    Never the repr of an arbitrary value: a list nested 1,000 deep (valid JSON) makes repr() raise
    RecursionError, and a long one would echo the whole body back."""
    if isinstance(value, str):
        return repr(value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…")
    return f"a JSON {_JSON_TYPES.get(type(value), 'value')}"


_JSON_TYPES: dict[type, str] = {
    dict: "object",
    list: "array",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


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
