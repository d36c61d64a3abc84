"""The buyer's billing REST API and the admin's credits, mounted under /api.

`/billing/balance` answers from the hot view (Redis), so it counts requests that finished a moment
ago and are not settled into Postgres yet; `/billing/transactions` and `/billing/usage` read
Postgres, so they show settled money only (a request appears within the settlement worker's batch
interval). Lists are newest first and keyset-paginated: `next_cursor` is opaque; pass it back as
`cursor` until it is null.

Authentication is done by the /api sub-app's middleware; this module reads only the standard
`request.user.identity` and `request.auth.scopes`, so it needs nothing from the accounts package.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway import apibody, httpbody, queryparams
from aichat_gateway.apiroute import CURSOR, LIMIT, UUID, ApiRoute, Auth, api_route, header, query, time_query
from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.balances import buyer_balance
from aichat_gateway.billing.credits import IDEMPOTENCY_PARAM, MAX_IDEMPOTENCY_KEY_CHARS, grant_credit, user_id_for_email
from aichat_gateway.billing.errors import BillingError, InvalidBillingInput, NotAuthenticated, NotPermitted
from aichat_gateway.billing.schemas import Balance, Credit, CreditRequest, TransactionPage, UsagePage
from aichat_gateway.billing.services import services
from aichat_gateway.billing.statements import (
    BUYER_KINDS,
    TransactionFilter,
    UsageFilter,
    all_buyer_transactions,
    buyer_transactions,
    buyer_usage,
    transactions_csv,
)

MAX_BODY = 16 * 1024
MAX_ENTRY_ID = 2**63 - 1  # ledger entry ids are bigint
M = TypeVar("M", bound=BaseModel)


def _user(request: Request) -> str:
    if "csrf_rejected" in request.auth.scopes:  # a session cookie on an unsafe method, without its token
        raise NotPermitted("missing or wrong CSRF token (header x-csrf-token)")
    if not request.user.is_authenticated:
        raise NotAuthenticated("authentication required: send Authorization: Bearer <access_token>")
    identity: str = request.user.identity
    return identity


def _admin(request: Request) -> str:
    user = _user(request)
    if "admin" not in request.auth.scopes:
        raise NotPermitted("only an admin may do this")
    return user


async def read_capped(request: Request, max_bytes: int, *, error: type[BillingError] = InvalidBillingInput) -> bytes:
    """The raw body under `httpbody.read_capped`, refused as `error` (billing's error tree)."""
    return await httpbody.read_capped(request, max_bytes, lambda: error("request body too large"))


async def read_body(request: Request, model: type[M], *, empty: Mapping[str, object] | None = None) -> M:
    """The body as `model` (apibody.read), refused as InvalidBillingInput naming the field."""
    return await apibody.read(request, model, InvalidBillingInput, max_bytes=MAX_BODY, empty=empty)


def _timestamp(request: Request, name: str) -> datetime | None:
    return queryparams.timestamp(request.query_params, name, InvalidBillingInput)


def _text(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is not None and "\x00" in raw:  # Postgres text cannot hold NUL: refuse, not fail the query
        raise InvalidBillingInput(f"{name} must not contain NUL characters", param=name)
    return raw


def _uuid(request: Request, name: str) -> uuid.UUID | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise InvalidBillingInput(f"{name} must be an id", param=name) from None


# ---- balance -------------------------------------------------------------------------------------


async def balance(request: Request) -> Response:
    user = _user(request)
    found = await buyer_balance(services(request), user)
    return JSONResponse(
        {
            "balance_usd": usd(found.balance_micro),
            "held_usd": usd(found.held_micro),
            "available_usd": usd(found.available_micro),
        }
    )


# ---- transactions (ledger entries of the buyer's account) and usage: billing/statements.py -------


def transaction_filter(request: Request) -> TransactionFilter:
    kind = _text(request, "kind") or None
    if kind is not None and kind not in BUYER_KINDS:
        raise InvalidBillingInput(f"kind must be one of {', '.join(BUYER_KINDS)}", param="kind")
    return TransactionFilter(kind, _timestamp(request, "since"), _timestamp(request, "until"))


async def transactions(request: Request) -> Response:
    user = _user(request)
    filters = transaction_filter(request)
    limit = queryparams.page_limit(request.query_params, InvalidBillingInput)
    after = queryparams.cursor(request.query_params, InvalidBillingInput, queryparams.cursor_int(1, MAX_ENTRY_ID))
    page = await buyer_transactions(
        services(request).db, user, filters, before=after[0] if after else None, limit=limit
    )
    next_cursor = queryparams.encode_cursor(page.next_before) if page.next_before is not None else None
    return JSONResponse({"data": [row.public() for row in page.rows], "next_cursor": next_cursor})


async def transactions_export(request: Request) -> Response:
    user = _user(request)
    rows = await all_buyer_transactions(services(request).db, user, transaction_filter(request))
    return Response(
        transactions_csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"content-disposition": 'attachment; filename="transactions.csv"', "cache-control": "no-store"},
    )


async def usage(request: Request) -> Response:
    user = _user(request)
    limit = queryparams.page_limit(request.query_params, InvalidBillingInput)
    after = queryparams.cursor(
        request.query_params, InvalidBillingInput, queryparams.cursor_time, queryparams.cursor_text
    )
    filters = UsageFilter(
        _uuid(request, "key_id"), _text(request, "model"), _timestamp(request, "since"), _timestamp(request, "until")
    )
    page = await buyer_usage(services(request).db, user, filters, after=after, limit=limit)
    next_cursor = queryparams.encode_cursor(*page.next_after) if page.next_after else None
    return JSONResponse({"data": [row.public() for row in page.rows], "next_cursor": next_cursor})


# ---- admin credits -------------------------------------------------------------------------------


async def create_credit(request: Request) -> Response:
    admin = _admin(request)
    body = await read_body(request, CreditRequest)
    svc = services(request)
    user_id = await user_id_for_email(svc.db, body.email)
    credit = await grant_credit(
        svc.db,
        user_id=user_id,
        amount_micro=body.amount_usd,
        reason=body.reason,  # its rule (credits.check_credit) is grant_credit's, shared with the CLI
        granted_by=admin,
        idempotency_key=request.headers.get("idempotency-key"),
        on_balance_change=svc.hot.credit,
        ip=request.client.host if request.client else None,
    )
    return JSONResponse(
        {
            "id": str(credit.transfer_id),
            "user_id": credit.user_id,
            "amount_usd": usd(credit.amount_micro),
            "balance_usd": usd(credit.balance_micro),
            "replayed": credit.replayed,
        },
        status_code=200 if credit.replayed else 201,
    )


IDEMPOTENCY = header(
    IDEMPOTENCY_PARAM,
    {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY_CHARS},
    "Makes a retry answer the first result",
)


TRANSACTION_FILTERS = (
    query("kind", {"type": "string", "enum": list(BUYER_KINDS)}, "Only this kind of entry"),
    time_query("since", "From this time (inclusive)"),
    time_query("until", "Before this time"),
)


def routes() -> list[ApiRoute]:
    return [
        api_route(
            "GET",
            "/billing/balance",
            balance,
            operation_id="getBalance",
            summary="Balance, open holds and what is available",
            tag="billing",
            answers={200: Balance},
            auth=Auth.SESSION,
        ),
        api_route(
            "GET",
            "/billing/transactions",
            transactions,
            operation_id="listTransactions",
            summary="The caller's ledger entries, newest first",
            tag="billing",
            params=(*TRANSACTION_FILTERS, CURSOR, LIMIT),
            answers={200: TransactionPage},
            auth=Auth.SESSION,
        ),
        api_route(
            "GET",
            "/billing/transactions.csv",
            transactions_export,
            operation_id="exportTransactions",
            summary="The caller's ledger entries as CSV (same filters, every page)",
            tag="billing",
            params=TRANSACTION_FILTERS,
            answers={200: None},
            auth=Auth.SESSION,
        ),
        api_route(
            "GET",
            "/billing/usage",
            usage,
            operation_id="listUsage",
            summary="The caller's settled requests, newest first",
            tag="billing",
            params=(
                query("key_id", UUID, "Only this key's requests"),
                query("model", {"type": "string"}, "Only this model"),
                time_query("since", "From this time (inclusive)"),
                time_query("until", "Before this time"),
                CURSOR,
                LIMIT,
            ),
            answers={200: UsagePage},
            auth=Auth.SESSION,
        ),
        api_route(
            "POST",
            "/admin/credits",
            create_credit,
            operation_id="grantCredit",
            summary="Admin: a promotional credit (a replay with the same Idempotency-Key answers 200)",
            tag="admin",
            body=CreditRequest,
            params=(IDEMPOTENCY,),
            answers={201: Credit, 200: Credit},
            auth=Auth.ADMIN,
            errors=(404, 409),
        ),
    ]
