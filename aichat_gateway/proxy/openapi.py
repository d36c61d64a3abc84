"""The OpenAPI 3.1 document of the REST API (`/api/*`), served at `GET /openapi.json`.

Written by hand, as plain data, from the handlers and the README's HTTP surface: the handlers read
JSON themselves (no schema library), so there is nothing to generate it from. A test walks the
app's routes and compares them with `paths` here, so a new route without a description fails the
suite; schemathesis fuzzes every operation against the running app from this document.

The OpenAI-compatible `/v1` surface is OpenAI's own and is not described here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

Schema = dict[str, Any]

_ERROR_DESCRIPTIONS = {
    400: "Malformed JSON or fields (`param` names the field)",
    401: "No valid session",
    402: "Insufficient balance",
    403: "Not allowed: an admin-only call, or a session cookie without its CSRF token on an unsafe method",
    404: "No such object for this caller (another user's objects look absent too)",
    409: "Conflict with the current state",
    413: "Body too large",
    429: "Too many attempts (see Retry-After)",
    503: "A store or Stripe is unreachable or not configured; retry shortly",
}
# Every authenticated call may also meet these.
_AUTH_ERRORS = (401, 403, 503)

# Session for API clients, or the browser's cookie (unsafe methods: plus the CSRF header).
Security = list[dict[str, list[str]]]
_BEARER_OR_COOKIE: Security = [{"bearerAuth": []}, {"sessionCookie": []}]
_BEARER_OR_COOKIE_CSRF: Security = [{"bearerAuth": []}, {"sessionCookie": [], "csrfHeader": []}]
_PUBLIC: Security = []


# --- schema helpers -------------------------------------------------------------------------------


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


def _schemas() -> dict[str, Schema]:
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
            }
        ),
        "KeyList": data_of("Key"),
        "ListingList": data_of("Listing"),
        "OfferList": data_of("Offer"),
        "TransactionPage": page_of("Transaction"),
        "UsagePage": page_of("UsageRecord"),
        "PayoutPage": page_of("Payout"),
    }


# --- operations -----------------------------------------------------------------------------------


def _json_body(schema_name: str, *, required: bool = True) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": ref(schema_name)}}}


def _responses(ok: int, schema_name: str | None, errors: Iterable[int]) -> dict[str, Any]:
    success: Schema = {"description": "OK" if ok < 300 else "Done"}
    if schema_name is not None:
        success["content"] = {"application/json": {"schema": ref(schema_name)}}
    responses: dict[str, Any] = {str(ok): success}
    for status in sorted(set(errors)):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    return responses


def op(
    operation_id: str,
    summary: str,
    tag: str,
    ok: tuple[int, str | None],
    *,
    body: str | None = None,
    body_required: bool = True,
    params: Iterable[Schema] = (),
    errors: Iterable[int] = (),
    security: Security | None = None,
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": _PUBLIC if security is None else security,
        "responses": _responses(ok[0], ok[1], errors),
    }
    parameters = list(params)
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = _json_body(body, required=body_required)
    return operation


def path_id(name: str, what: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "schema": UUID, "description": f"The {what}'s id"}


def query(name: str, schema: Schema, description: str) -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def header(name: str, schema: Schema, description: str, *, required: bool = False) -> Schema:
    return {"name": name, "in": "header", "required": required, "schema": schema, "description": description}


LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "Page size (default 50)")
CURSOR = query("cursor", STRING, "`next_cursor` of the previous page")
IDEMPOTENCY = header(
    "Idempotency-Key", {"type": "string", "minLength": 1, "maxLength": 200}, "Makes a retry answer the first result"
)


def _user_ops(auth: Security, unsafe: Security) -> dict[str, dict[str, Schema]]:
    bad = (400, *_AUTH_ERRORS)
    return {
        "/api/auth/register": {
            "post": op(
                "register", "Create an account", "accounts", (201, "User"), body="Credentials", errors=(400, 409)
            )
        },
        "/api/auth/login": {
            "post": op(
                "login",
                "Log in: a bearer token, and the session and CSRF cookies for browsers",
                "accounts",
                (200, "Session"),
                body="Credentials",
                errors=(400, 401, 429, 503),
            )
        },
        "/api/auth/logout": {"post": op("logout", "Forget the session cookies", "accounts", (204, None))},
        "/api/auth/me": {
            "get": op("me", "The signed-in user", "accounts", (200, "User"), errors=_AUTH_ERRORS, security=auth)
        },
        "/api/keys": {
            "post": op(
                "createKey",
                "Create a gateway key",
                "keys",
                (201, "CreatedKey"),
                body="KeyCreate",
                errors=bad,
                security=unsafe,
            ),
            "get": op(
                "listKeys",
                "The caller's keys (no secrets)",
                "keys",
                (200, "KeyList"),
                errors=_AUTH_ERRORS,
                security=auth,
            ),
        },
        "/api/keys/{key_id}": {
            "patch": op(
                "updateKey",
                "Change a key's name or settings",
                "keys",
                (200, "Key"),
                body="KeyPatch",
                params=[path_id("key_id", "key")],
                errors=(*bad, 404),
                security=unsafe,
            ),
            "delete": op(
                "revokeKey",
                "Revoke a key",
                "keys",
                (204, None),
                params=[path_id("key_id", "key")],
                errors=(*_AUTH_ERRORS, 404),
                security=unsafe,
            ),
        },
    }


def _marketplace_ops(auth: Security, unsafe: Security) -> dict[str, dict[str, Schema]]:
    listing = [path_id("listing_id", "listing")]
    bad = (400, 409, *_AUTH_ERRORS)
    return {
        "/api/marketplace/offers": {
            "get": op(
                "listOffers",
                "Public: offers with prices and last hour's figures",
                "marketplace",
                (200, "OfferList"),
                params=[query("model", {"type": "string", "minLength": 1, "maxLength": 256}, "Only this model")],
                errors=(400, 503),
            )
        },
        "/api/marketplace/quote": {
            "post": op(
                "quote",
                "Public: the offer that would serve a request now, and its cost range",
                "marketplace",
                (200, "Quote"),
                body="QuoteRequest",
                errors=(400, 404, 413, 503),
            )
        },
        "/api/marketplace/listings": {
            "post": op(
                "createListing",
                "List a provider endpoint",
                "listings",
                (201, "Listing"),
                body="ListingCreate",
                errors=bad,
                security=unsafe,
            ),
            "get": op(
                "listListings",
                "The caller's listings (admins: all)",
                "listings",
                (200, "ListingList"),
                errors=_AUTH_ERRORS,
                security=auth,
            ),
        },
        "/api/marketplace/listings/{listing_id}": {
            "get": op(
                "getListing",
                "One listing",
                "listings",
                (200, "Listing"),
                params=listing,
                errors=(*_AUTH_ERRORS, 404),
                security=auth,
            ),
            "patch": op(
                "updateListing",
                "Change a listing (allow-listed fields per role)",
                "listings",
                (200, "Listing"),
                body="ListingPatch",
                params=listing,
                errors=(*bad, 404),
                security=unsafe,
            ),
            "delete": op(
                "deleteListing",
                "Delete a listing",
                "listings",
                (204, None),
                params=listing,
                errors=(*_AUTH_ERRORS, 404),
                security=unsafe,
            ),
        },
    }


def _billing_ops(auth: Security, unsafe: Security) -> dict[str, dict[str, Schema]]:
    time_filter = {"type": "string", "format": "date-time"}
    payout = [path_id("payout_id", "payout")]
    return {
        "/api/billing/balance": {
            "get": op(
                "getBalance",
                "Balance, open holds and what is available",
                "billing",
                (200, "Balance"),
                errors=_AUTH_ERRORS,
                security=auth,
            )
        },
        "/api/billing/transactions": {
            "get": op(
                "listTransactions",
                "The caller's ledger entries, newest first",
                "billing",
                (200, "TransactionPage"),
                params=[CURSOR, LIMIT],
                errors=(400, *_AUTH_ERRORS),
                security=auth,
            )
        },
        "/api/billing/usage": {
            "get": op(
                "listUsage",
                "The caller's settled requests, newest first",
                "billing",
                (200, "UsagePage"),
                params=[
                    query("key_id", UUID, "Only this key's requests"),
                    query("model", STRING, "Only this model"),
                    query("since", time_filter, "From this time (inclusive)"),
                    query("until", time_filter, "Before this time"),
                    CURSOR,
                    LIMIT,
                ],
                errors=(400, *_AUTH_ERRORS),
                security=auth,
            )
        },
        "/api/billing/topups": {
            "post": op(
                "createTopup",
                "Start a Stripe top-up (credited only by the verified webhook)",
                "billing",
                (201, "CreatedTopup"),
                body="TopupRequest",
                errors=(400, *_AUTH_ERRORS),
                security=unsafe,
            )
        },
        "/api/billing/topups/{topup_id}": {
            "get": op(
                "getTopup",
                "One of the caller's top-ups",
                "billing",
                (200, "Topup"),
                params=[path_id("topup_id", "top-up")],
                errors=(*_AUTH_ERRORS, 404),
                security=auth,
            )
        },
        "/api/webhooks/stripe": {
            "post": op(
                "stripeWebhook",
                "Stripe's signed events (the signature is the authentication)",
                "billing",
                (200, "WebhookReceipt"),
                body="StripeEvent",
                params=[header("Stripe-Signature", STRING, "t=<unix time>,v1=<HMAC-SHA256>", required=True)],
                errors=(400, 503),
            )
        },
        "/api/admin/credits": {
            "post": op(
                "grantCredit",
                "Admin: a promotional credit (a replay with the same Idempotency-Key answers 200)",
                "admin",
                (201, "Credit"),
                body="CreditRequest",
                params=[IDEMPOTENCY],
                errors=(400, 404, 409, *_AUTH_ERRORS),
                security=unsafe,
            )
        },
        "/api/seller/earnings": {
            "get": op(
                "getEarnings",
                "The caller's earnings, with breakdowns over since..until (at most 366 days)",
                "seller",
                (200, "Earnings"),
                params=[
                    query("since", time_filter, "Default: 30 days before until"),
                    query("until", time_filter, "Default: now"),
                ],
                errors=(400, *_AUTH_ERRORS),
                security=auth,
            )
        },
        "/api/seller/payout-account": {
            "get": op(
                "getPayoutAccount",
                "The caller's Stripe Connect account",
                "seller",
                (200, "PayoutAccount"),
                errors=_AUTH_ERRORS,
                security=auth,
            ),
            "put": op(
                "putPayoutAccount",
                "Set the caller's Stripe Connect account",
                "seller",
                (200, "PayoutAccount"),
                body="PayoutAccountRequest",
                errors=(400, *_AUTH_ERRORS),
                security=unsafe,
            ),
        },
        "/api/seller/payouts": {
            "post": op(
                "requestPayout",
                "Request a payout (default: everything available, floored to the cent)",
                "seller",
                (201, "Payout"),
                body="PayoutRequest",
                body_required=False,
                params=[IDEMPOTENCY],
                errors=(400, 409, *_AUTH_ERRORS),
                security=unsafe,
            ),
            "get": op(
                "listPayouts",
                "The caller's payouts, newest first",
                "seller",
                (200, "PayoutPage"),
                params=[CURSOR, LIMIT],
                errors=(400, *_AUTH_ERRORS),
                security=auth,
            ),
        },
        "/api/seller/payouts/{payout_id}": {
            "get": op(
                "getPayout",
                "One of the caller's payouts",
                "seller",
                (200, "Payout"),
                params=payout,
                errors=(*_AUTH_ERRORS, 404),
                security=auth,
            )
        },
        "/api/admin/payouts/{payout_id}/mark-paid": {
            "post": op(
                "markPayoutPaid",
                "Admin: paid by other means (only from pending)",
                "admin",
                (200, "Payout"),
                body="MarkPaid",
                params=payout,
                errors=(400, 404, 409, *_AUTH_ERRORS),
                security=unsafe,
            )
        },
        "/api/admin/payouts/{payout_id}/cancel": {
            "post": op(
                "cancelPayout",
                "Admin: cancel a pending payout (the amount returns to the seller's earnings)",
                "admin",
                (200, "Payout"),
                params=payout,
                errors=(404, 409, *_AUTH_ERRORS),
                security=unsafe,
            )
        },
    }


def openapi_document(version: str = "0.1.0") -> dict[str, Any]:
    """The whole document, fresh each call (plain data: callers may change their copy)."""
    paths = {
        **_user_ops(_BEARER_OR_COOKIE, _BEARER_OR_COOKIE_CSRF),
        **_marketplace_ops(_BEARER_OR_COOKIE, _BEARER_OR_COOKIE_CSRF),
        **_billing_ops(_BEARER_OR_COOKIE, _BEARER_OR_COOKIE_CSRF),
    }
    error_responses = {
        f"Error{status}": {
            "description": description,
            "content": {"application/json": {"schema": ref("Error")}},
            **({"headers": {"Retry-After": {"schema": {"type": "integer"}}}} if status == 429 else {}),
        }
        for status, description in _ERROR_DESCRIPTIONS.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AIChat Gateway REST API",
            "version": version,
            "description": (
                "Accounts, keys, the marketplace, billing and payouts. Money is a decimal string in USD. "
                "Errors use OpenAI's shape. The OpenAI-compatible /v1 surface is not described here."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "responses": error_responses,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "aichat_session"},
                "csrfHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-csrf-token",
                    "description": "The aichat_csrf cookie's value, on unsafe methods with the session cookie",
                },
            },
        },
    }


async def openapi_endpoint(request: Request) -> Response:
    return JSONResponse(openapi_document())
