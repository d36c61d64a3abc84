"""The component schemas of the OpenAPI document (proxy/openapi.py): the shapes of the /api bodies
and answers, as plain JSON Schema (2020-12, as OpenAPI 3.1 uses it) built by small helpers.

Request bodies are closed (`additionalProperties: false`) wherever the handler refuses unknown
fields; answers list the fields always present and stay open, since fields may be added (never
renamed). Money is a decimal string in USD: six places in answers, up to six in requests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict[str, Schema], required: Iterable[str] = (), *, closed: bool = True) -> Schema:
    """An object schema; `closed` (no other properties) wherever the API refuses unknown fields."""
    schema: Schema = {"type": "object", "properties": properties}
    needed = list(required)
    if needed:
        schema["required"] = needed
    if closed:
        schema["additionalProperties"] = False
    return schema


def answer(properties: dict[str, Schema]) -> Schema:
    """A response object: every listed property is always present; more may be added later."""
    return obj(properties, properties, closed=False)


def page_of(item: str) -> Schema:
    return answer({"data": {"type": "array", "items": ref(item)}, "next_cursor": nullable({"type": "string"})})


def data_of(item: str) -> Schema:
    return answer({"data": {"type": "array", "items": ref(item)}})


STRING: Schema = {"type": "string"}
TIME: Schema = {"type": "string", "format": "date-time"}
UUID: Schema = {"type": "string", "format": "uuid"}
COUNT: Schema = {"type": "integer", "minimum": 0}
USD: Schema = {
    "type": "string",
    "pattern": r"^-?[0-9]+\.[0-9]{6}$",
    "description": "USD as a decimal string with six places",
    "examples": ["12.345678"],
}
USD_IN: Schema = {
    "type": "string",
    "pattern": r"^[0-9]{1,13}(\.[0-9]{1,6})?$",
    "description": "USD as a decimal string, at most six places",
    "examples": ["20.00"],
}
PRICE_IN: Schema = {"type": "string", "pattern": r"^[0-9]{1,5}(\.[0-9]{1,6})?$", "examples": ["0.15"]}


def component_schemas() -> dict[str, Schema]:
    routing: Schema = {
        "type": "object",
        "description": "Default routing preferences, the shape of a chat request's `provider` object",
        "properties": {
            "order": {"type": "array", "items": STRING, "maxItems": 256},
            "only": {"type": "array", "items": STRING, "minItems": 1, "maxItems": 256},
            "ignore": {"type": "array", "items": STRING, "maxItems": 256},
            "sort": {"enum": ["price", "latency", "throughput", "load", "balanced"]},
            "max_price": obj({"prompt": PRICE_IN, "completion": PRICE_IN}),
            "allow_fallbacks": {"type": "boolean"},
        },
        "additionalProperties": False,
    }
    key_settings = {
        "routing": nullable(routing),
        "daily_spend_cap_usd": nullable(USD_IN),
        "monthly_spend_cap_usd": nullable(USD_IN),
    }
    shown_settings = {
        "routing": nullable({"type": "object"}),
        "daily_spend_cap_usd": nullable(USD),
        "monthly_spend_cap_usd": nullable(USD),
    }
    key_name: Schema = {"type": "string", "minLength": 1, "maxLength": 100}
    pricing: Schema = {
        "oneOf": [
            obj({"multiplier": {"type": "string", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,4})?$"}}, ["multiplier"]),
            obj(
                {"input_usd_per_million": PRICE_IN, "output_usd_per_million": PRICE_IN},
                ["input_usd_per_million", "output_usd_per_million"],
            ),
        ]
    }
    limit: Schema = nullable({"type": "integer", "minimum": 1, "maximum": 10**12})
    limits = obj({name: limit for name in ("rpm", "tpm", "concurrency", "daily_tokens", "monthly_tokens")})
    model_name: Schema = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"}
    listing_text = {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "base_url": {"type": "string", "format": "uri", "maxLength": 2048, "examples": ["https://api.openai.com/v1"]},
        "api_key": {"type": "string", "minLength": 1, "maxLength": 512},
    }
    return {
        "Error": obj(
            {
                "error": obj(
                    {
                        "message": STRING,
                        "type": STRING,
                        "param": nullable(STRING),
                        "code": nullable(STRING),
                    },
                    ["message", "type", "param", "code"],
                )
            },
            ["error"],
        ),
        "Credentials": obj(
            {
                "email": {"type": "string", "format": "email", "maxLength": 320},
                "password": {"type": "string", "minLength": 8, "maxLength": 256},
            },
            ["email", "password"],
        ),
        "User": answer({"id": UUID, "email": STRING, "role": {"enum": ["user", "admin"]}}),
        "Session": answer(
            {"access_token": STRING, "token_type": {"const": "bearer"}, "expires_in": {"type": "integer"}}
        ),
        "PasswordChange": obj(
            {
                "current_password": {"type": "string", "maxLength": 256},
                "new_password": {"type": "string", "minLength": 8, "maxLength": 256},
            },
            ["current_password", "new_password"],
        ),
        "SessionList": data_of("SessionInfo"),
        "SessionInfo": answer(
            {
                "id": UUID,
                "created_at": TIME,
                "expires_at": TIME,
                "user_agent": nullable(STRING),
                "ip": nullable(STRING),
                "current": {"type": "boolean", "description": "The session of this request"},
            }
        ),
        "KeyCreate": obj({"name": key_name, **key_settings}, ["name"]),
        "KeyPatch": {**obj({"name": key_name, **key_settings}), "minProperties": 1},
        "Key": answer(
            {
                "id": UUID,
                "name": STRING,
                "prefix": STRING,
                "created_at": TIME,
                "last_used_at": nullable(TIME),
                "revoked_at": nullable(TIME),
                **shown_settings,
            }
        ),
        "CreatedKey": answer(
            {
                "id": UUID,
                "name": STRING,
                "key": {"type": "string", "description": "The secret: shown only in this answer"},
                "prefix": STRING,
                "created_at": TIME,
                **shown_settings,
            }
        ),
        "ListingCreate": obj(
            {
                **listing_text,
                "provider": {"enum": ["openai", "anthropic"]},
                "models": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 100,
                    "items": obj({"model": model_name, "upstream_model": model_name}, ["model"]),
                },
                "pricing": pricing,
                "limits": nullable(limits),
                "attest_resale": {"const": True},
            },
            ["name", "provider", "base_url", "api_key", "models", "pricing", "attest_resale"],
        ),
        "ListingPatch": {
            **obj(
                {
                    **listing_text,
                    "pricing": pricing,
                    "limits": limits,
                    "status": {"enum": ["active", "paused", "disabled"], "description": "disabled: admins only"},
                    "status_reason": {"type": "string", "maxLength": 500, "description": "admins only"},
                }
            ),
            "minProperties": 1,
        },
        "Listing": answer(
            {
                "id": UUID,
                "public_id": STRING,
                "name": STRING,
                "provider": STRING,
                "base_url": STRING,
                "key_last4": STRING,
                "models": {"type": "array", "items": answer({"model": STRING, "upstream_model": STRING})},
                "pricing": {
                    "oneOf": [
                        answer({"multiplier": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"}}),
                        answer({"input_usd_per_million": USD, "output_usd_per_million": USD}),
                    ]
                },
                "limits": {"type": "object", "additionalProperties": {"type": "integer"}},
                "status": STRING,
                "status_reason": nullable(STRING),
                "attested_at": nullable(TIME),
                "created_at": TIME,
                "updated_at": TIME,
            }
        ),
        "Offer": answer(
            {
                "offer_id": STRING,
                "model": STRING,
                "input_usd_per_million": USD,
                "output_usd_per_million": USD,
                "status": STRING,
                "last_hour": answer(
                    {
                        "requests": COUNT,
                        "success_rate": nullable({"type": "number"}),
                        "p50_latency_ms": nullable({"type": "integer"}),
                        "p50_ttft_ms": nullable({"type": "integer"}),
                    }
                ),
            }
        ),
        "QuoteRequest": obj(
            {
                "model": {"type": "string", "minLength": 1},
                "messages": {"type": "array", "items": {"type": "object"}},
                "tools": {"type": "array"},
                "prompt_tokens": {"type": "integer", "minimum": 0, "maximum": 10_000_000},
                "max_tokens": {"type": "integer", "minimum": 0},
            },
            ["model"],
        ),
        "Quote": answer(
            {
                "model": STRING,
                "prompt_tokens": COUNT,
                "max_tokens": COUNT,
                "offer_id": STRING,
                "input_usd_per_million": USD,
                "output_usd_per_million": USD,
                "estimated_cost_usd": answer({"min": USD, "max": USD}),
            }
        ),
        "Balance": answer({"balance_usd": USD, "held_usd": USD, "available_usd": USD}),
        "Transaction": answer(
            {
                "id": STRING,
                "type": STRING,
                "amount_usd": USD,
                "balance_after_usd": USD,
                "created_at": TIME,
                "description": STRING,
            }
        ),
        "UsageRecord": answer(
            {
                "request_id": STRING,
                "key_id": nullable(UUID),
                "model": STRING,
                "prompt_tokens": COUNT,
                "completion_tokens": COUNT,
                "cost_usd": USD,
                "outcome": STRING,
                "status": {"type": "integer"},
                "stream": {"type": "boolean"},
                "created_at": TIME,
            }
        ),
        "TopupRequest": obj({"amount_usd": USD_IN}, ["amount_usd"]),
        "CreatedTopup": answer(
            {
                "id": UUID,
                "payment_intent_id": STRING,
                "client_secret": nullable(STRING),
                "amount_usd": USD,
                "status": STRING,
            }
        ),
        "Topup": answer(
            {
                "id": UUID,
                "payment_intent_id": nullable(STRING),
                "amount_usd": USD,
                "credited_usd": USD,
                "refunded_usd": USD,
                "status": {"enum": ["creating", "pending", "succeeded", "failed"]},
                "created_at": TIME,
            }
        ),
        "StripeEvent": obj(
            {"id": STRING, "type": STRING, "data": obj({"object": {"type": "object"}}, ["object"], closed=False)},
            ["id", "type", "data"],
            closed=False,
        ),
        "WebhookReceipt": answer({"received": {"const": True}, "outcome": STRING}),
        "CreditRequest": obj(
            {
                "email": {"type": "string", "format": "email"},
                "amount_usd": USD_IN,
                "reason": {"type": "string", "minLength": 1, "maxLength": 500},
            },
            ["email", "amount_usd", "reason"],
        ),
        "Credit": answer(
            {"id": STRING, "user_id": UUID, "amount_usd": USD, "balance_usd": USD, "replayed": {"type": "boolean"}}
        ),
        "Earnings": answer(
            {
                "earned_usd": USD,
                "paid_out_usd": USD,
                "pending_usd": USD,
                "holding_usd": {**USD, "description": "Earned within the holding period: not payable yet"},
                "next_payable_at": nullable(TIME),
                "available_usd": USD,
                "since": TIME,
                "until": TIME,
                "by_listing": {
                    "type": "array",
                    "items": answer(
                        {
                            "listing_id": nullable(UUID),
                            "public_id": nullable(STRING),
                            "name": nullable(STRING),
                            "earned_usd": USD,
                            "requests": COUNT,
                        }
                    ),
                },
                "by_day": {
                    "type": "array",
                    "items": answer(
                        {"date": {"type": "string", "format": "date"}, "earned_usd": USD, "requests": COUNT}
                    ),
                },
            }
        ),
        "PayoutAccountRequest": obj(
            {"stripe_account_id": {"type": "string", "pattern": "^acct_[A-Za-z0-9]{6,64}$"}}, ["stripe_account_id"]
        ),
        "PayoutAccount": answer({"stripe_account_id": nullable(STRING), "updated_at": nullable(TIME)}),
        "PayoutRequest": obj({"amount_usd": nullable(USD_IN)}),
        "MarkPaid": obj({"reference": {"type": "string", "minLength": 1, "maxLength": 200}}, ["reference"]),
        "Payout": answer(
            {
                "id": UUID,
                "amount_usd": USD,
                "status": {"enum": ["pending", "paid", "failed", "cancelled"]},
                "method": {"enum": ["stripe", "manual"]},
                "destination": nullable(STRING),
                "stripe_transfer_id": nullable(STRING),
                "reference": nullable(STRING),
                "failure_reason": nullable(STRING),
                "created_at": TIME,
                "updated_at": TIME,
                "paid_at": nullable(TIME),
                "approval_required": {"type": "boolean"},
                "awaiting_approval": {"type": "boolean"},
                "approved_at": nullable(TIME),
            }
        ),
        "KeyList": data_of("Key"),
        "ListingList": data_of("Listing"),
        "OfferList": data_of("Offer"),
        "TransactionPage": page_of("Transaction"),
        "UsagePage": page_of("UsageRecord"),
        "PayoutPage": page_of("Payout"),
    }
