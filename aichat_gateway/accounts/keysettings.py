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

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aichat_gateway.accounts.errors import InvalidInput
from aichat_gateway.config.money import usd

if TYPE_CHECKING:
    from aichat_gateway.accounts.schemas import KeyCreate, KeyPatch

RoutingValidator = Callable[[object], dict[str, Any]]

ROUTING = "routing"
DAILY_CAP = "daily_spend_cap_usd"
MONTHLY_CAP = "monthly_spend_cap_usd"


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


def cap_micro(micro: int, field: str) -> int:
    """The rule for a spend cap: more than zero (null, not 0, means no cap); ValueError naming the field."""
    if micro <= 0:
        raise ValueError(f"{field} must be more than 0 (use null for no cap)")
    return micro


def parse_routing(value: object, validate: RoutingValidator) -> dict[str, Any] | None:
    """A key's routing defaults → the normalised object, or None for null and for `{}`."""
    if value is None:
        return None
    normalised = validate(value)
    return normalised or None


def settings_of(body: KeyCreate | KeyPatch, validate_routing: RoutingValidator) -> KeySettings:
    """The settings of a body read with accounts/schemas.py (caps already in micro-USD); absent and
    null fields are "none"."""
    return KeySettings(
        routing=parse_routing(body.routing, validate_routing),
        daily_cap_micro=body.daily_spend_cap_usd,
        monthly_cap_micro=body.monthly_spend_cap_usd,
    )


def changes_of(body: KeyPatch, validate_routing: RoutingValidator) -> KeyChanges:
    """A PATCH (its model is the allow-list): the fields sent, null included; refuses an empty one."""
    if not body.model_fields_set:
        raise InvalidInput(f"nothing to change; send any of {', '.join(type(body).model_fields)}")
    return KeyChanges(
        given=frozenset(body.model_fields_set), name=body.name, settings=settings_of(body, validate_routing)
    )
