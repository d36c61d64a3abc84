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

from aichat_gateway.server.openapi_schemas import STRING, UUID, Schema, component_schemas, ref

_ERROR_DESCRIPTIONS = {
    400: "Malformed JSON or fields (`param` names the field)",
    401: "No valid session",
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
# Logout: a session if one is presented ({} = none at all).
_OPTIONAL_SESSION: Security = [{}, {"bearerAuth": []}, {"sessionCookie": [], "csrfHeader": []}]


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
        "/api/auth/logout": {
            "post": op(
                "logout",
                "End the session presented (bearer or cookie) in every process, and forget the cookies",
                "accounts",
                (204, None),
                errors=_AUTH_ERRORS,
                security=_OPTIONAL_SESSION,
            )
        },
        "/api/auth/me": {
            "get": op("me", "The signed-in user", "accounts", (200, "User"), errors=_AUTH_ERRORS, security=auth)
        },
        "/api/auth/password": {
            "post": op(
                "changePassword",
                "Change the password; every other session of the user ends (a wrong current password "
                "counts against the login limit)",
                "accounts",
                (204, None),
                body="PasswordChange",
                errors=(400, 429, *_AUTH_ERRORS),
                security=unsafe,
            )
        },
        "/api/auth/sessions": {
            "get": op(
                "listSessions",
                "The caller's live sessions, the current one flagged (no tokens)",
                "accounts",
                (200, "SessionList"),
                errors=_AUTH_ERRORS,
                security=auth,
            )
        },
        "/api/auth/sessions/{session_id}": {
            "delete": op(
                "endSession",
                "End one of the caller's sessions",
                "accounts",
                (204, None),
                params=[path_id("session_id", "session")],
                errors=(*_AUTH_ERRORS, 404),
                security=unsafe,
            )
        },
        "/api/admin/users/{user_id}/sessions/revoke": {
            "post": op(
                "endUserSessions",
                "Admin: end every session of a user, in every process",
                "admin",
                (204, None),
                params=[path_id("user_id", "user")],
                errors=(*_AUTH_ERRORS, 404),
                security=unsafe,
            )
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
    time_filter = {
        "type": "string",
        "format": "date-time",
        "description": "ISO 8601: a date (UTC midnight) or a date-time with Z or +-HH:MM (none means UTC), "
        "between 1970-01-01 and 2199-12-31 UTC; anything else is 400",
    }
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
                "Request a payout (default: everything available, floored to the cent; earnings in the holding "
                "period are not available; above the approval amount it waits for an admin)",
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
        "/api/admin/payouts/{payout_id}/approve": {
            "post": op(
                "approvePayout",
                "Admin: approve a pending payout above GATEWAY_PAYOUT_APPROVAL_USD, so Stripe processing sends it",
                "admin",
                (200, "Payout"),
                params=payout,
                errors=(404, 409, *_AUTH_ERRORS),
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
            "schemas": component_schemas(),
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
