"""The key pages' form, as pure functions: HTML fields to the API's KeyCreate/KeyPatch body and back.

The form shows the routing defaults a person usually sets (sort, price ceilings, fallbacks) and the
spend caps; routing fields the form does not show (`order`, `only`, `ignore`, set through the API)
are kept as they are when a key is edited. The API's errors name `routing.<field>`; `field_of`
says which form field to show each next to.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aichat_gateway.accounts.keys import ApiKey

FIELDS = (
    "name",
    "sort",
    "max_prompt_price",
    "max_completion_price",
    "allow_fallbacks",
    "daily_spend_cap_usd",
    "monthly_spend_cap_usd",
)
# The `sort` choices as (value, label); "" leaves the choice to the gateway.
SORTS = (
    ("", "Gateway default (balanced)"),
    ("price", "Cheapest first"),
    ("latency", "Fastest first"),
    ("throughput", "Least busy first"),
    ("balanced", "Balanced"),
)
_PARAMS = {
    "routing.sort": "sort",
    "routing.max_price": "max_prompt_price",
    "routing.max_price.prompt": "max_prompt_price",
    "routing.max_price.completion": "max_completion_price",
    "routing.allow_fallbacks": "allow_fallbacks",
}
_FORM_ROUTING = ("sort", "max_price", "allow_fallbacks")


def field_of(param: str | None) -> str | None:
    """Pure: the form field an API error's `param` belongs to (None: the form as a whole)."""
    if param is None:
        return None
    if param in FIELDS:
        return param
    return _PARAMS.get(param)


def routing_of(values: Mapping[str, str], kept: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Pure: the routing object of the form's values, over the `kept` routing's other fields.

    Blank fields are "not set"; fallbacks are on unless unticked (the router's default), so only
    `false` is written. None when nothing is set.
    """
    routing = {k: v for k, v in (kept or {}).items() if k not in _FORM_ROUTING}
    if values.get("sort"):
        routing["sort"] = values["sort"]
    max_price = {
        side: values[field].strip()
        for side, field in (("prompt", "max_prompt_price"), ("completion", "max_completion_price"))
        if values.get(field, "").strip()
    }
    if max_price:
        routing["max_price"] = max_price
    if not values.get("allow_fallbacks"):
        routing["allow_fallbacks"] = False
    return routing or None


def body_of(values: Mapping[str, str], kept: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pure: the API body (KeyCreate, or a KeyPatch setting every field) of the form's values."""
    return {
        "name": values.get("name", ""),
        "routing": routing_of(values, kept),
        "daily_spend_cap_usd": values.get("daily_spend_cap_usd", "").strip() or None,
        "monthly_spend_cap_usd": values.get("monthly_spend_cap_usd", "").strip() or None,
    }


def values_of(key: ApiKey) -> dict[str, str]:
    """Pure: the form's values showing `key` as it is (the edit form's starting point)."""
    routing = key.settings.routing or {}
    max_price = routing.get("max_price") or {}
    shown = key.settings.public()
    return {
        "name": key.name,
        "sort": str(routing.get("sort") or ""),
        "max_prompt_price": str(max_price.get("prompt") or ""),
        "max_completion_price": str(max_price.get("completion") or ""),
        "allow_fallbacks": "" if routing.get("allow_fallbacks") is False else "on",
        "daily_spend_cap_usd": shown["daily_spend_cap_usd"] or "",
        "monthly_spend_cap_usd": shown["monthly_spend_cap_usd"] or "",
    }


def when(value: datetime | None, never: str = "never") -> str:
    """Pure: a time as the pages show it (UTC, to the minute)."""
    if value is None:
        return never
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
