"""The listing form's fields to the API's bodies and back (pure): the seller pages validate what was
typed with the API's own models (marketplace/schemas.py: ListingCreate, ListingPatch), so these
functions only reshape. A problem at an API path lands next to the form field that holds it:
`models.0.model` on the models box (as "line 1: ..."), `pricing.multiplier` on the multiplier,
`limits.rpm` on the RPM box.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from aichat_gateway.config.money import usd
from aichat_gateway.marketplace.listings import LIMIT_FIELDS

PRICE_FIELDS: Final = ("pricing_mode", "multiplier", "input_usd_per_million", "output_usd_per_million")
CREATE_FIELDS: Final = (
    "name",
    "provider",
    "base_url",
    "api_key",
    "models",
    *PRICE_FIELDS,
    *LIMIT_FIELDS,
    "attest_resale",
)
EDIT_FIELDS: Final = ("name", "base_url", "api_key", *PRICE_FIELDS, *LIMIT_FIELDS)
EXPLICIT: Final = "explicit"
_DIGITS = re.compile(r"^[0-9]{1,15}$")
_MODEL_LINE = re.compile(r"^models\.([0-9]+)(\..*)?$")


def parse_models(text: str) -> list[dict[str, str]]:
    """One model per line: `model` or `model=upstream_model` (the provider's name for it)."""
    entries: list[dict[str, str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        model, sep, upstream = line.partition("=")
        entry = {"model": model.strip()}
        if sep:
            entry["upstream_model"] = upstream.strip()
        entries.append(entry)
    return entries


def models_text(models: list[Mapping[str, str]]) -> str:
    """A listing's stored models as the form writes them."""
    return "\n".join(
        m["model"] if m["upstream_model"] == m["model"] else f"{m['model']}={m['upstream_model']}" for m in models
    )


def pricing_body(values: Mapping[str, str]) -> dict[str, str]:
    if values.get("pricing_mode") == EXPLICIT:
        return {
            "input_usd_per_million": values.get("input_usd_per_million", "").strip(),
            "output_usd_per_million": values.get("output_usd_per_million", "").strip(),
        }
    return {"multiplier": values.get("multiplier", "").strip()}


def limits_body(values: Mapping[str, str]) -> dict[str, Any] | None:
    """The limits typed (whole numbers as numbers; anything else as typed, for the model to refuse
    in its words); None when every box is empty."""
    limits: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        typed = values.get(name, "").strip()
        if typed:
            limits[name] = int(typed) if _DIGITS.match(typed) else typed
    return limits or None


def create_body(values: Mapping[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": values.get("name", ""),
        "provider": values.get("provider", ""),
        "base_url": values.get("base_url", ""),
        "api_key": values.get("api_key", ""),
        "models": parse_models(values.get("models", "")),
        "pricing": pricing_body(values),
        "attest_resale": values.get("attest_resale") == "yes",
    }
    limits = limits_body(values)
    if limits is not None:
        body["limits"] = limits
    return body


def patch_body(values: Mapping[str, str], current_base_url: str) -> dict[str, Any]:
    """The edit form as a PATCH: name, pricing and limits always (empty limit boxes remove those
    limits); the base URL only if it changed and the key only if one was typed, so the API's rule
    holds as it is: a new base URL needs a new key with it."""
    body: dict[str, Any] = {
        "name": values.get("name", ""),
        "pricing": pricing_body(values),
        "limits": limits_body(values),
    }
    base_url = values.get("base_url", "").strip()
    if base_url and base_url != current_base_url:
        body["base_url"] = base_url
    if values.get("api_key", "").strip():
        body["api_key"] = values["api_key"]
    return body


def form_field(path: str) -> str:
    """Pure: the form field that shows a problem found at an API body path."""
    if path == "models" or _MODEL_LINE.match(path):
        return "models"
    head, _, rest = path.partition(".")
    if head in ("pricing", "limits") and rest:
        return rest.split(".")[0]
    return path


def form_problems(problems: Mapping[str, str]) -> dict[str, str]:
    """Problems by API path -> by form field, the first per field; a model line's says which line."""
    shown: dict[str, str] = {}
    for path, message in problems.items():
        line = _MODEL_LINE.match(path)
        text = f"line {int(line.group(1)) + 1}: {message}" if line else message
        shown.setdefault(form_field(path), text)
    return shown


def pricing_values(row: Mapping[str, Any]) -> dict[str, str]:
    """A stored listing's price as the form's fields."""
    multiplier: Decimal | None = row["price_multiplier"]
    if multiplier is not None:
        return {"pricing_mode": "multiplier", "multiplier": format(multiplier.normalize(), "f")}
    return {
        "pricing_mode": EXPLICIT,
        "input_usd_per_million": usd(row["input_micro_per_million"]),
        "output_usd_per_million": usd(row["output_micro_per_million"]),
    }
