"""The marketplace API's bodies and answers as pydantic models (aichat_gateway/apibody.py reads them).

The rules are listings.py's (text fields, model names, providers, limits), pricing.py's (prices
and multipliers in config/money.py's decimal grammar: strings, never floats) and changes.py's
(settable statuses); the per-role PATCH allow-list and the catalog check need the caller and the
catalog, so `changes.parse_changes` and `listings.new_listing` apply them to a parsed body.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, ConfigDict, Field, PlainValidator, ValidationInfo, WithJsonSchema, field_validator
from pydantic import model_validator as model_rule

from aichat_gateway.apibody import Answer, Body, Settable, Usd
from aichat_gateway.marketplace.changes import SettableStatus
from aichat_gateway.marketplace.listings import (
    LIMIT_FIELDS,
    MAX_KEY_CHARS,
    MAX_LIMIT,
    MAX_MODELS,
    MAX_NAME_CHARS,
    MAX_REASON_CHARS,
    MAX_URL_CHARS,
    MODEL_NAME,
    Provider,
    clean_text,
    reason_text,
)
from aichat_gateway.marketplace.pricing import Price, parse_multiplier, parse_price


def _text_doc(max_len: int) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "minLength": 1, "maxLength": max_len})


Name = Annotated[str, AfterValidator(lambda v: clean_text(v, "name", MAX_NAME_CHARS)), _text_doc(MAX_NAME_CHARS)]
BaseUrl = Annotated[
    str,
    AfterValidator(lambda v: clean_text(v, "base_url", MAX_URL_CHARS)),
    WithJsonSchema(
        {"type": "string", "format": "uri", "maxLength": MAX_URL_CHARS, "examples": ["https://api.openai.com/v1"]}
    ),
]
ApiKey = Annotated[str, AfterValidator(lambda v: clean_text(v, "api_key", MAX_KEY_CHARS)), _text_doc(MAX_KEY_CHARS)]
ModelName = Annotated[str, Field(pattern=MODEL_NAME)]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT)]


def _price(value: object, info: ValidationInfo) -> int:
    return parse_price(value, f"pricing.{info.field_name}")


_PRICE_DOC = WithJsonSchema({"type": "string", "pattern": r"^[0-9]{1,5}(\.[0-9]{1,6})?$", "examples": ["0.15"]})
PricePerMillion = Annotated[int, PlainValidator(_price)]
Multiplier = Annotated[Decimal, PlainValidator(parse_multiplier)]
_FORMS = 'pricing must be {"multiplier"} or {"input_usd_per_million", "output_usd_per_million"}'


class Pricing(Body):
    """A listing's price: a multiplier over the catalog's list price, or explicit USD prices per
    million tokens, input and output; decimal strings. A model outside the catalog needs explicit
    prices."""

    # Only ever under `pricing`: the prices' messages name `pricing.<field>`.

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"required": ["multiplier"], "maxProperties": 1},
                {"required": ["input_usd_per_million", "output_usd_per_million"], "maxProperties": 2},
            ]
        }
    )

    multiplier: Annotated[
        Multiplier | None, WithJsonSchema({"type": "string", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,4})?$"})
    ] = None
    input_usd_per_million: Annotated[PricePerMillion | None, _PRICE_DOC] = None
    output_usd_per_million: Annotated[PricePerMillion | None, _PRICE_DOC] = None

    @model_rule(mode="after")
    def _one_form(self) -> Pricing:
        self.parsed()
        return self

    def parsed(self) -> tuple[Decimal | None, Price | None]:
        """(multiplier, None) or (None, explicit prices in micro-USD per million tokens)."""
        inp, out = self.input_usd_per_million, self.output_usd_per_million
        if self.multiplier is not None and inp is None and out is None:
            return self.multiplier, None
        if self.multiplier is None and inp is not None and out is not None:
            return None, Price(inp, out)
        raise ValueError(_FORMS)


class Limits(Body):
    rpm: Limit | None = None
    tpm: Limit | None = None
    concurrency: Limit | None = None
    daily_tokens: Limit | None = None
    monthly_tokens: Limit | None = None

    def as_dict(self) -> dict[str, int]:
        """The limits set (null: no such limit), as stored."""
        return {name: value for name in LIMIT_FIELDS if (value := getattr(self, name)) is not None}


class ModelEntry(Body):
    model: ModelName
    upstream_model: ModelName | None = None  # the provider's name for it; default the same

    @property
    def upstream(self) -> str:
        return self.upstream_model or self.model


class ListingCreate(Body):
    name: Name
    provider: Provider
    base_url: BaseUrl
    api_key: ApiKey
    models: Annotated[list[ModelEntry], Field(min_length=1, max_length=MAX_MODELS)]
    pricing: Pricing
    limits: Limits | None = None
    attest_resale: Annotated[bool, WithJsonSchema({"const": True})] = Field(
        description="You confirm you may resell access through this key"
    )

    @field_validator("models")
    @classmethod
    def _each_model_once(cls, models: list[ModelEntry]) -> list[ModelEntry]:
        seen: set[str] = set()
        for entry in models:
            if entry.model in seen:
                raise ValueError(f"model {entry.model!r} is listed twice")
            seen.add(entry.model)
        return models

    @field_validator("attest_resale")
    @classmethod
    def _attested(cls, value: bool) -> bool:
        if not value:
            raise ValueError("attest_resale must be true: you confirm you may resell access through this key")
        return value


class ListingPatch(Body):
    """Only the fields sent change; `limits: null` removes every limit. The owner may change any
    field but `status_reason`, and a new `base_url` needs its `api_key` in the same request; an
    admin may change `name`, `pricing`, `limits`, `status` and `status_reason` of any listing."""

    # Who may change which field is changes.py's (per role), applied after this shape.

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    name: Settable[Name] = None
    base_url: Settable[BaseUrl] = None
    api_key: Settable[ApiKey] = None
    pricing: Settable[Pricing] = None
    limits: Limits | None = None
    status: SettableStatus | None = Field(default=None, description="disabled: admins only")
    status_reason: Annotated[str, AfterValidator(reason_text), Field(max_length=MAX_REASON_CHARS)] | None = Field(
        default=None, description="admins only"
    )


# ---- answers -----------------------------------------------------------------------------------


class ListedModel(Answer):
    model: str
    upstream_model: str


class MultiplierShown(Answer):
    multiplier: str = Field(pattern=r"^[0-9]+(\.[0-9]+)?$")


class PricesShown(Answer):
    input_usd_per_million: Usd
    output_usd_per_million: Usd


class Listing(Answer):
    id: uuid.UUID
    public_id: str
    name: str
    provider: str
    base_url: str
    key_last4: str
    models: list[ListedModel]
    pricing: MultiplierShown | PricesShown
    limits: dict[str, int]
    status: str
    status_reason: str | None
    attested_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ListingList(Answer):
    data: list[Listing]


class LastHour(Answer):
    requests: int = Field(ge=0)
    success_rate: float | None
    p50_latency_ms: int | None
    p50_ttft_ms: int | None


class Offer(Answer):
    offer_id: str
    model: str
    input_usd_per_million: Usd
    output_usd_per_million: Usd
    status: str
    last_hour: LastHour


class OfferList(Answer):
    data: list[Offer]
