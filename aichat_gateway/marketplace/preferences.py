"""Buyer routing preferences: the OpenRouter-style `provider` object of a request body.

A buyer may steer the router per request (`{"provider": {...}}` next to `model`), and an API key
may carry defaults of the same shape. Both are parsed by `parse_preferences` and combined by
`merge`, the request winning field by field, so a key's defaults are only a starting point.

Fields (all optional):

| field | meaning |
|---|---|
| `order` | listing public ids to try first, in this order (ids that do not serve the model are skipped) |
| `only` | allow-list: no other listing is used |
| `ignore` | deny-list: these listings are never used |
| `sort` | `"price"`, `"latency"`, `"throughput"` or `"load"` (the same: least busy), `"balanced"` |
| `max_price` | `{"prompt": "USD per 1M", "completion": "USD per 1M"}`, decimal strings, either or both |
| `allow_fallbacks` | default true; false: only the first choice is tried (see `router`) |

Validation is strict because a silently ignored typo (`"ingore"`) would route money somewhere the
buyer meant to avoid: unknown fields, wrong types, duplicates and float prices are refused with an
`InvalidPreferences` naming the field (`param="provider.max_price.prompt"`). JSON `null` means
"not set", as many client libraries send unset optional fields that way.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from aichat_gateway.marketplace.errors import InvalidPreferences, shown
from aichat_gateway.marketplace.pricing import PriceError, parse_usd, usd

MAX_LISTED_IDS = 256
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_FIELDS = ("order", "only", "ignore", "sort", "max_price", "allow_fallbacks")
_PRICE_FIELDS = ("prompt", "completion")


class Strategy(enum.StrEnum):
    """How the router orders candidates; `router` documents each formula."""

    BALANCED = "balanced"
    CHEAPEST = "cheapest"
    FASTEST = "fastest"
    LEAST_BUSY = "least_busy"


# `sort` values as buyers write them (OpenRouter's names plus ours) → the strategy they select.
SORTS: dict[str, Strategy] = {
    "price": Strategy.CHEAPEST,
    "latency": Strategy.FASTEST,
    "throughput": Strategy.LEAST_BUSY,
    "load": Strategy.LEAST_BUSY,
    "balanced": Strategy.BALANCED,
}


@dataclass(frozen=True, slots=True)
class MaxPrice:
    """Price caps in integer micro-USD per million tokens; None means no cap on that side."""

    prompt: int | None = None
    completion: int | None = None


@dataclass(frozen=True, slots=True)
class Preferences:
    """Parsed preferences. None means "not set", so `merge` can tell a default from a choice."""

    order: tuple[str, ...] | None = None
    only: frozenset[str] | None = None
    ignore: frozenset[str] | None = None
    sort: Strategy | None = None
    max_price: MaxPrice | None = None
    allow_fallbacks: bool | None = None


NO_PREFERENCES = Preferences()


def parse_preferences(value: object) -> Preferences:
    """The request's (or a key's stored) `provider` value → Preferences; raises InvalidPreferences."""
    if value is None:
        return NO_PREFERENCES
    if not isinstance(value, dict):
        raise InvalidPreferences("provider must be an object of routing preferences", param="provider")
    for name in value:
        if name not in _FIELDS:
            raise InvalidPreferences(
                f"provider.{name} is not a supported field; use {', '.join(_FIELDS)}", param=f"provider.{name}"
            )
    only = _ids(value.get("only"), "only")
    if only is not None and not only:
        raise InvalidPreferences(
            "provider.only must name at least one listing; leave it out to allow every listing",
            param="provider.only",
        )
    ignore = _ids(value.get("ignore"), "ignore")
    return Preferences(
        order=_ids(value.get("order"), "order"),
        only=frozenset(only) if only is not None else None,
        ignore=frozenset(ignore) if ignore is not None else None,
        sort=_sort(value.get("sort")),
        max_price=_max_price(value.get("max_price")),
        allow_fallbacks=_bool(value.get("allow_fallbacks"), "allow_fallbacks"),
    )


def merge(defaults: Preferences, request: Preferences) -> Preferences:
    """A key's defaults overlaid by a request's choices, field by field (request wins).

    `max_price` merges per side: a request capping only `prompt` keeps the key's `completion`
    cap. An explicit empty `order` or `ignore` in the request clears the key's default.
    """
    if request == NO_PREFERENCES:
        return defaults
    if defaults == NO_PREFERENCES:
        return request
    caps = defaults.max_price
    if request.max_price is not None:
        caps = (
            request.max_price
            if caps is None
            else MaxPrice(
                request.max_price.prompt if request.max_price.prompt is not None else caps.prompt,
                request.max_price.completion if request.max_price.completion is not None else caps.completion,
            )
        )
    return Preferences(
        order=request.order if request.order is not None else defaults.order,
        only=request.only if request.only is not None else defaults.only,
        ignore=request.ignore if request.ignore is not None else defaults.ignore,
        sort=request.sort if request.sort is not None else defaults.sort,
        max_price=caps,
        allow_fallbacks=request.allow_fallbacks if request.allow_fallbacks is not None else defaults.allow_fallbacks,
    )


def dump_preferences(preferences: Preferences) -> dict[str, Any]:
    """Preferences → the JSON shape `parse_preferences` reads (to store a key's defaults)."""
    out: dict[str, Any] = {}
    if preferences.order is not None:
        out["order"] = list(preferences.order)
    if preferences.only is not None:
        out["only"] = sorted(preferences.only)
    if preferences.ignore is not None:
        out["ignore"] = sorted(preferences.ignore)
    if preferences.sort is not None:
        out["sort"] = next(name for name, strategy in SORTS.items() if strategy is preferences.sort)
    if preferences.max_price is not None:
        caps = {"prompt": preferences.max_price.prompt, "completion": preferences.max_price.completion}
        if any(cap is not None for cap in caps.values()):
            out["max_price"] = {side: usd(cap) for side, cap in caps.items() if cap is not None}
    if preferences.allow_fallbacks is not None:
        out["allow_fallbacks"] = preferences.allow_fallbacks
    return out


def _ids(value: object, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    param = f"provider.{name}"
    if not isinstance(value, list):
        raise InvalidPreferences(f"{param} must be a list of listing ids", param=param)
    if len(value) > MAX_LISTED_IDS:
        raise InvalidPreferences(f"{param} names more than {MAX_LISTED_IDS} listings", param=param)
    seen: dict[str, None] = {}
    for item in value:
        if not isinstance(item, str) or not _ID.match(item):
            raise InvalidPreferences(f"{param} holds {shown(item)}, which is not a listing id", param=param)
        if item in seen:
            raise InvalidPreferences(f"{param} names {shown(item)} twice", param=param)
        seen[item] = None
    return tuple(seen)


def _sort(value: object) -> Strategy | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in SORTS:
        raise InvalidPreferences(f"provider.sort must be one of {', '.join(SORTS)}", param="provider.sort")
    return SORTS[value]


def _max_price(value: object) -> MaxPrice | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise InvalidPreferences(
            'provider.max_price must be an object such as {"prompt": "1.5", "completion": "6"}',
            param="provider.max_price",
        )
    caps: dict[str, int | None] = {}
    for side, text in value.items():
        param = f"provider.max_price.{side}"
        if side not in _PRICE_FIELDS:
            raise InvalidPreferences(f"{param} is not supported; use prompt and/or completion", param=param)
        if text is None:
            caps[side] = None
            continue
        try:
            caps[side] = parse_usd(text, f"{param} (USD per million tokens)")
        except PriceError as exc:
            raise InvalidPreferences(str(exc), param=param) from None
    if caps.get("prompt") is None and caps.get("completion") is None:
        return None  # every side null: no cap, as if the field were absent
    return MaxPrice(caps.get("prompt"), caps.get("completion"))


def _bool(value: object, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidPreferences(f"provider.{name} must be true or false", param=f"provider.{name}")
