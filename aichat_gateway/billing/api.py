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
from datetime import UTC, datetime
from typing import Any, TypeVar

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


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


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


# ---- transactions (ledger entries of the buyer's account) ----------------------------------------

_TRANSACTIONS_SQL = """
SELECT e.id, e.amount_micro, e.balance_after_micro, e.created_at, t.kind, t.memo
FROM ledger_entries e
JOIN ledger_accounts a ON a.id = e.account_id
JOIN transfers t ON t.id = e.transfer_id
WHERE a.kind = 'buyer' AND a.owner_id = $1 AND ($2::bigint IS NULL OR e.id < $2)
ORDER BY e.id DESC
LIMIT $3
"""


async def transactions(request: Request) -> Response:
    user = _user(request)
    limit = queryparams.page_limit(request.query_params, InvalidBillingInput)
    after = queryparams.cursor(request.query_params, InvalidBillingInput, queryparams.cursor_int(1, MAX_ENTRY_ID))
    before = after[0] if after else None
    rows = await services(request).db.fetch(_TRANSACTIONS_SQL, uuid.UUID(user), before, limit + 1)
    page = rows[:limit]
    data = [
        {
            "id": str(r["id"]),
            "type": r["kind"],
            "amount_usd": usd(r["amount_micro"]),
            "balance_after_usd": usd(r["balance_after_micro"]),
            "created_at": _iso(r["created_at"]),
            "description": _describe(r["kind"], r["memo"]),
        }
        for r in page
    ]
    more = len(rows) > limit
    return JSONResponse({"data": data, "next_cursor": queryparams.encode_cursor(page[-1]["id"]) if more else None})


def _describe(kind: str, memo: dict[str, Any]) -> str:
    """A short, secret-free line for a statement; memos hold ids and reasons only."""
    if kind == "usage":
        return f"{memo.get('model', 'request')} {memo.get('request_id', '')}".strip()
    if kind == "credit":
        return f"credit: {memo.get('reason', '')}".strip()
    return kind.replace("_", " ")


# ---- usage (one row per settled request) ---------------------------------------------------------

_USAGE_SQL = """
SELECT request_id, key_id, model, prompt_tokens, completion_tokens, cost_micro, outcome, status, stream,
       created_at
FROM usage_records
WHERE buyer_id = $1
  AND ($2::uuid IS NULL OR key_id = $2)
  AND ($3::text IS NULL OR model = $3)
  AND ($4::timestamptz IS NULL OR created_at >= $4)
  AND ($5::timestamptz IS NULL OR created_at < $5)
  AND ($6::timestamptz IS NULL OR (created_at, request_id) < ($6, $7))
ORDER BY created_at DESC, request_id DESC
LIMIT $8
"""


async def usage(request: Request) -> Response:
    user = _user(request)
    limit = queryparams.page_limit(request.query_params, InvalidBillingInput)
    after = queryparams.cursor(
        request.query_params, InvalidBillingInput, queryparams.cursor_time, queryparams.cursor_text
    )
    after_at, after_id = after if after else (None, None)
    rows = await services(request).db.fetch(
        _USAGE_SQL,
        uuid.UUID(user),
        _uuid(request, "key_id"),
        _text(request, "model"),
        _timestamp(request, "since"),
        _timestamp(request, "until"),
        after_at,
        after_id,
        limit + 1,
    )
    page = rows[:limit]
    data = [
        {
            "request_id": r["request_id"],
            "key_id": str(r["key_id"]) if r["key_id"] else None,
            "model": r["model"],
            "prompt_tokens": r["prompt_tokens"],
            "completion_tokens": r["completion_tokens"],
            "cost_usd": usd(r["cost_micro"]),
            "outcome": r["outcome"],
            "status": r["status"],
            "stream": r["stream"],
            "created_at": _iso(r["created_at"]),
        }
        for r in page
    ]
    next_cursor = None
    if len(rows) > limit:
        last = page[-1]
        next_cursor = queryparams.encode_cursor(last["created_at"], last["request_id"])
    return JSONResponse({"data": data, "next_cursor": next_cursor})


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
            params=(CURSOR, LIMIT),
            answers={200: TransactionPage},
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
