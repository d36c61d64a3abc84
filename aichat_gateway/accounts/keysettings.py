"""A key's settings (routing defaults, daily and monthly spend caps), decided as pure functions.

Accounts knows nothing of listings or money rules beyond "an amount": the routing object is opaque
here and checked by a callable the app factory hands in (`RoutingValidator`, built on the
marketplace's own preferences parser, so a key's defaults and a request's `provider` can never be
read two ways). It must return the normalised object or raise InvalidInput with a `param` starting
with "routing". Caps are decimal USD strings in the API and integer micro-USD everywhere else.

JSON `null` means "none" both when creating and when patching (it clears); an empty routing object
is the same as none and is stored as NULL, so "has defaults" is simply "routing is not None".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aichat_gateway.accounts.errors import InvalidInput
from aichat_gateway.config.money import parse_usd_micro, usd

RoutingValidator = Callable[[object], dict[str, Any]]

ROUTING = "routing"
DAILY_CAP = "daily_spend_cap_usd"
MONTHLY_CAP = "monthly_spend_cap_usd"
SETTING_FIELDS = frozenset({ROUTING, DAILY_CAP, MONTHLY_CAP})
# The PATCH allow-list: everything a key's owner may change. The secret, prefix, owner and the
# timestamps are not on it; revoking is DELETE.
PATCH_FIELDS = frozenset({"name"}) | SETTING_FIELDS


@dataclass(frozen=True, slots=True)
class KeySettings:
    """A key's stored settings; None means "none" for each."""

    routing: dict[str, Any] | None = None
    daily_cap_micro: int | None = None
    monthly_cap_micro: int | None = None

    def public(self) -> dict[str, Any]:
        return {
            ROUTING: self.routing,
            DAILY_CAP: _usd_or_none(self.daily_cap_micro),
            MONTHLY_CAP: _usd_or_none(self.monthly_cap_micro),
        }


NO_SETTINGS = KeySettings()


@dataclass(frozen=True, slots=True)
class KeyChanges:
    """A validated PATCH: the new values, and which API fields were given (only those change)."""

    given: frozenset[str]
    name: str | None = None
    settings: KeySettings = NO_SETTINGS

    def sets(self, field: str) -> bool:
        return field in self.given


def _usd_or_none(micro: int | None) -> str | None:
    return usd(micro) if micro is not None else None


def parse_cap(value: object, field: str) -> int | None:
    """A spend cap from the API → micro-USD; null → None. Must be a decimal string > 0."""
    if value is None:
        return None
    try:
        micro = parse_usd_micro(value, name=field)
    except ValueError as exc:
        raise InvalidInput(str(exc), param=field) from None
    if micro <= 0:
        raise InvalidInput(f"{field} must be more than 0 (use null for no cap)", param=field)
    return micro


def parse_routing(value: object, validate: RoutingValidator) -> dict[str, Any] | None:
    """A key's routing defaults → the normalised object, or None for null and for `{}`."""
    if value is None:
        return None
    normalised = validate(value)
    return normalised or None


def parse_settings(body: Mapping[str, object], validate_routing: RoutingValidator) -> KeySettings:
    """The settings of a create body; absent and null fields are "none"."""
    return KeySettings(
        routing=parse_routing(body.get(ROUTING), validate_routing),
        daily_cap_micro=parse_cap(body.get(DAILY_CAP), DAILY_CAP),
        monthly_cap_micro=parse_cap(body.get(MONTHLY_CAP), MONTHLY_CAP),
    )


def parse_changes(
    body: Mapping[str, object], validate_routing: RoutingValidator, validate_name: Callable[[object], str]
) -> KeyChanges:
    """A PATCH body against the allow-list: refuses unknown fields (naming the first) and an empty body."""
    refused = sorted(set(body) - PATCH_FIELDS)
    if refused:
        shown = refused[0] if len(refused[0]) <= 64 else refused[0][:64] + "…"
        raise InvalidInput(f"field '{shown}' cannot be changed; use {', '.join(sorted(PATCH_FIELDS))}", param=shown)
    if not body:
        raise InvalidInput(f"nothing to change; send any of {', '.join(sorted(PATCH_FIELDS))}")
    return KeyChanges(
        given=frozenset(body),
        name=validate_name(body["name"]) if "name" in body else None,
        settings=parse_settings(body, validate_routing),
    )
