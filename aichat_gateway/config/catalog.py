"""The model catalog: which models the gateway knows and their providers' list prices.

The data lives in `catalog.json` beside this module (shipped as package data) so prices can be
updated without touching code. Prices there are decimal strings in USD per million tokens because
JSON numbers are floats to most readers and money must never pass through a float; here they become
integers in micro-USD per million tokens ("0.15" -> 150_000), the unit used everywhere inside.

A price that cannot be represented exactly in micro-USD, or that is negative, refuses to load: a
silently rounded list price would misprice every multiplier-priced listing built on it.

The catalog also bounds what a prompt can cost in tokens beyond its text (`PartAllowance`): an
image, audio or file part of a chat message is a few bytes of URL or id but may be billed as
thousands of tokens, so holds add the worst case per part (per provider in `input_part_tokens`,
per model where it differs), and no prompt of a catalog model exceeds its context length.

This module belongs to `aichat_gateway.config` and so imports nothing else of ours.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Literal, cast, get_args

Provider = Literal["openai", "anthropic", "google", "meta", "mistral", "deepseek"]
PartKind = Literal["image", "audio", "file"]
Kind = Literal["chat", "embedding"]

PROVIDERS: frozenset[str] = frozenset(get_args(Provider))
KINDS: frozenset[str] = frozenset(get_args(Kind))
PART_KINDS: tuple[str, ...] = get_args(PartKind)
# `input_part_tokens` key for models outside the catalog (sold with explicit prices).
OTHER_MODELS = "other"

MICRO_PER_USD = 1_000_000
_CATALOG_RESOURCE = "catalog.json"
# Plain digits with an optional fraction: no sign, exponent, underscores or whitespace, which
# Decimal() would otherwise accept and which have no business in a price list.
_DECIMAL_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MODEL_KEYS = frozenset(
    {
        "id",
        "provider",
        "kind",
        "input_usd_per_million",
        "output_usd_per_million",
        "context_length",
        "max_output_tokens",
        "tokenizer",
    }
)
_OPTIONAL_MODEL_KEYS = frozenset({"input_part_tokens"})


@dataclass(frozen=True, slots=True)
class PartAllowance:
    """Worst-case prompt tokens of one non-text part of a chat message, by kind, and the most
    prompt tokens the model accepts at all (None: unknown, a model outside the catalog)."""

    image: int
    audio: int
    file: int
    prompt_ceiling: int | None = None


# Used when a catalog document names no allowances (tests' small documents): generous on purpose.
_FALLBACK_PARTS: Mapping[str, int] = MappingProxyType({"image": 50_000, "audio": 50_000, "file": 1_000_000})


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """One model's list entry. Prices are integer micro-USD per million tokens, never floats."""

    id: str
    provider: Provider
    kind: Kind
    input_micro_per_million: int
    output_micro_per_million: int
    context_length: int
    max_output_tokens: int
    # The model's tokenizer family ("o200k_base", "cl100k_base", "claude", "gemini", ...). A hint
    # only: offline counting may approximate families it has no encoding for.
    tokenizer: str
    # Per-part token allowances where this model differs from its provider's (e.g. gpt-4o-mini's
    # images cost ~33 times gpt-4o's); kinds not named here take the provider's.
    input_part_tokens: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class Catalog:
    """An immutable set of catalog models, looked up by id.

    Built once at start-up and shared read-only by every request, so it must not be changeable.
    """

    entries: tuple[CatalogModel, ...]
    # Provider (or OTHER_MODELS) -> part kind -> worst-case tokens of one such part.
    input_part_tokens: Mapping[str, Mapping[str, int]] = field(default_factory=lambda: MappingProxyType({}))
    _by_id: Mapping[str, CatalogModel] = field(init=False, repr=False, compare=False)
    _allowances: Mapping[str, PartAllowance] = field(init=False, repr=False, compare=False)
    _other: PartAllowance = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id: dict[str, CatalogModel] = {}
        for model in self.entries:
            if model.id in by_id:
                raise ValueError(f"catalog lists model {model.id!r} twice")
            by_id[model.id] = model
        # A frozen dataclass can only set derived fields through object.__setattr__.
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))
        other = {**_FALLBACK_PARTS, **self.input_part_tokens.get(OTHER_MODELS, {})}
        object.__setattr__(self, "_other", PartAllowance(other["image"], other["audio"], other["file"]))
        allowances = {}
        for model in self.entries:
            parts = {**other, **self.input_part_tokens.get(model.provider, {}), **model.input_part_tokens}
            # A file (a PDF by id, say) has no size we can know: the whole context is its bound.
            allowances[model.id] = PartAllowance(
                image=min(parts["image"], model.context_length),
                audio=min(parts["audio"], model.context_length),
                file=model.context_length,
                prompt_ceiling=model.context_length,
            )
        object.__setattr__(self, "_allowances", MappingProxyType(allowances))

    def get(self, model_id: str) -> CatalogModel | None:
        """The model with this exact id, or None: unknown models need explicit listing prices."""
        return self._by_id.get(model_id)

    def part_allowance(self, model_id: str) -> PartAllowance:
        """What one image, audio or file part of a prompt to this model may cost at most, in tokens."""
        return self._allowances.get(model_id, self._other)

    def models(self) -> tuple[CatalogModel, ...]:
        """Every model, in file order (the order `/v1/models` shows)."""
        return self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id


def usd_per_million_to_micro(value: object) -> int:
    """Convert a decimal USD-per-million string to integer micro-USD per million tokens.

    Refuses (ValueError) anything but a plain non-negative decimal string whose value is a whole
    number of micro-USD: floats, signs, exponents and a seventh decimal place are all refused
    rather than rounded, because a price is money.
    """
    if not isinstance(value, str):
        raise ValueError(f'price must be a decimal string such as "0.15", not {type(value).__name__}')
    if value.startswith("-"):
        raise ValueError(f"price {value!r} is negative")
    if _DECIMAL_RE.fullmatch(value) is None:
        raise ValueError(f'price {value!r} is not a plain decimal number such as "0.15"')
    try:
        micro = Decimal(value) * MICRO_PER_USD
    except InvalidOperation as exc:  # unreachable after the pattern check; kept for safety
        raise ValueError(f"price {value!r} is not a decimal number") from exc
    if micro != micro.to_integral_value():
        raise ValueError(f"price {value!r} is not exact in micro-USD (at most 6 decimal places)")
    return int(micro)


def _require_int(entry: Mapping[str, object], key: str, model_id: str, minimum: int) -> int:
    value = entry[key]
    # bool is an int subclass; `true` in the JSON is a typo, not a length.
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"catalog model {model_id!r}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _require_str(entry: Mapping[str, object], key: str, model_id: str) -> str:
    value = entry[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"catalog model {model_id!r}: {key} must be a non-empty string, got {value!r}")
    return value


def parse_model(entry: object) -> CatalogModel:
    """Validate one JSON model entry; every error message names the model so the file is easy to fix."""
    if not isinstance(entry, dict):
        raise ValueError(f"catalog entry must be an object, got {type(entry).__name__}")
    raw = cast("dict[str, object]", entry)
    raw_id = raw.get("id")
    if not isinstance(raw_id, str) or not raw_id:
        raise ValueError(f"catalog entry has no valid id: {raw_id!r}")
    model_id = raw_id
    missing = sorted(_MODEL_KEYS - raw.keys())
    if missing:
        raise ValueError(f"catalog model {model_id!r}: missing {', '.join(missing)}")
    unknown = sorted(str(k) for k in raw.keys() - _MODEL_KEYS - _OPTIONAL_MODEL_KEYS)
    if unknown:
        raise ValueError(f"catalog model {model_id!r}: unknown field(s) {', '.join(unknown)}")

    provider = raw["provider"]
    if provider not in PROVIDERS:
        raise ValueError(f"catalog model {model_id!r}: unknown provider {provider!r}")
    kind = raw["kind"]
    if kind not in KINDS:
        raise ValueError(f"catalog model {model_id!r}: kind must be 'chat' or 'embedding', got {kind!r}")

    prices: dict[str, int] = {}
    for key in ("input_usd_per_million", "output_usd_per_million"):
        try:
            prices[key] = usd_per_million_to_micro(raw[key])
        except ValueError as exc:
            raise ValueError(f"catalog model {model_id!r}: {key}: {exc}") from exc

    context_length = _require_int(raw, "context_length", model_id, 1)
    max_output_tokens = _require_int(raw, "max_output_tokens", model_id, 0)
    if max_output_tokens > context_length:
        raise ValueError(f"catalog model {model_id!r}: max_output_tokens exceeds context_length")

    return CatalogModel(
        id=model_id,
        provider=cast(Provider, provider),
        kind=cast(Kind, kind),
        input_micro_per_million=prices["input_usd_per_million"],
        output_micro_per_million=prices["output_usd_per_million"],
        context_length=context_length,
        max_output_tokens=max_output_tokens,
        tokenizer=_require_str(raw, "tokenizer", model_id),
        input_part_tokens=parse_part_tokens(raw.get("input_part_tokens", {}), f"catalog model {model_id!r}"),
    )


def parse_part_tokens(value: object, where: str) -> Mapping[str, int]:
    """`{"image": 1445, ...}`: part kinds to positive token counts."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: input_part_tokens must be an object")
    parts: dict[str, int] = {}
    for kind, tokens in value.items():
        if kind not in PART_KINDS:
            raise ValueError(f"{where}: input_part_tokens: unknown part kind {kind!r}")
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise ValueError(f"{where}: input_part_tokens.{kind} must be a positive integer, got {tokens!r}")
        parts[kind] = tokens
    return MappingProxyType(parts)


def parse_catalog(document: object) -> Catalog:
    """Build a Catalog from the decoded JSON document `{"models": [...], "notes"?: str}`."""
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise ValueError('catalog must be a JSON object with a "models" list')
    entries: Iterable[object] = document["models"]
    defaults = document.get("input_part_tokens", {})
    if not isinstance(defaults, dict):
        raise ValueError("catalog: input_part_tokens must be an object of providers")
    by_provider: dict[str, Mapping[str, int]] = {}
    for provider, parts in defaults.items():
        if provider == "notes":
            continue
        if provider not in PROVIDERS and provider != OTHER_MODELS:
            raise ValueError(f"catalog: input_part_tokens: unknown provider {provider!r}")
        by_provider[provider] = parse_part_tokens(parts, f"catalog: input_part_tokens.{provider}")
    return Catalog(tuple(parse_model(entry) for entry in entries), MappingProxyType(by_provider))


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate the catalog; by default the copy packaged with this module.

    The packaged file is read through importlib.resources so it works from a wheel or zip as well
    as from a checkout. Any problem raises ValueError (or OSError for an unreadable path) at
    start-up rather than mispricing requests later.
    """
    if path is None:
        raw = resources.files(__package__ or "aichat_gateway.config").joinpath(_CATALOG_RESOURCE).read_bytes()
    else:
        raw = path.read_bytes()
    try:
        document = json.loads(raw)
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValueError(f"catalog is not valid JSON: {exc}") from exc
    return parse_catalog(document)
