"""The seller's earnings and payouts, and the admin's payout decisions, mounted under /api.

Every seller route answers about the caller only: another seller's payout is 404, as if absent.
The earnings figures are earnings.py's (the dashboard's seller page reads the same function).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway import queryparams
from aichat_gateway.apiroute import CURSOR, LIMIT, ApiRoute, Auth, api_route, header, time_query
from aichat_gateway.billing import auditruns
from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.api import read_body
from aichat_gateway.billing.connect import onboarding_link
from aichat_gateway.billing.credits import IDEMPOTENCY_PARAM
from aichat_gateway.billing.earnings import earnings_json, iso, seller_earnings
from aichat_gateway.billing.errors import InvalidBillingInput, NotAuthenticated, NotPermitted
from aichat_gateway.billing.payouts import Payout, Payouts
from aichat_gateway.billing.schemas import AuditRun as AuditRunShown
from aichat_gateway.billing.schemas import (
    Earnings,
    LastAuditRun,
    MarkPaid,
    OnboardingLink,
    OpenPayoutList,
    PayoutAccount,
    PayoutAccountRequest,
    PayoutPage,
    PayoutRequest,
)
from aichat_gateway.billing.schemas import Payout as PayoutShown
from aichat_gateway.billing.services import services

DEFAULT_WINDOW: Final = timedelta(days=30)
MAX_WINDOW: Final = timedelta(days=366)
MAX_IDEMPOTENCY_KEY: Final = 200


# --- pure ------------------------------------------------------------------------------------


def earnings_window(since: datetime | None, until: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """[since, until) of the breakdowns: default the 30 days before `until` (default now), at most 366 days."""
    end = until or now
    start = since or end - DEFAULT_WINDOW
    if start >= end:
        raise InvalidBillingInput("since must be before until", param="since")
    if end - start > MAX_WINDOW:
        raise InvalidBillingInput("since..until may span at most 366 days", param="since")
    return start, end


def request_key(seller_id: str, idempotency_key: str | None) -> str | None:
    """A seller's Idempotency-Key header → the payout's request key (scoped to the seller)."""
    if idempotency_key is None:
        return None
    if not 1 <= len(idempotency_key) <= MAX_IDEMPOTENCY_KEY or not idempotency_key.isprintable():
        raise InvalidBillingInput(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters")
    return f"payout-request:{seller_id}:{idempotency_key}"


def payout_json(payout: Payout) -> dict[str, Any]:
    return {
        "id": payout.id,
        "amount_usd": usd(payout.amount_micro),
        "status": payout.status,
        "method": payout.method,
        "destination": payout.destination,
        "stripe_transfer_id": payout.stripe_transfer_id,
        "reference": payout.reference,
        "failure_reason": payout.failure_reason,
        "created_at": iso(payout.created_at),
        "updated_at": iso(payout.updated_at),
        "paid_at": iso(payout.paid_at),
        "approval_required": payout.approval_required,
        "awaiting_approval": payout.awaiting_approval,
        "approved_at": iso(payout.approved_at),
    }


# --- HTTP ------------------------------------------------------------------------------------


def _caller(request: Request) -> str:
    if "csrf_rejected" in request.auth.scopes:
        raise NotPermitted("missing or wrong CSRF token (header x-csrf-token)")
    if not request.user.is_authenticated or "authenticated" not in request.auth.scopes:
        raise NotAuthenticated("authentication required: send Authorization: Bearer <access_token>")
    return str(request.user.identity)


def _admin(request: Request) -> str:
    user = _caller(request)
    if "admin" not in request.auth.scopes:
        raise NotPermitted("only an admin may do this")
    return user


def _payouts(request: Request) -> Payouts:
    svc = services(request)
    return Payouts.from_settings(svc.db, svc.settings, clock=svc.clock)


def _timestamp(request: Request, name: str) -> datetime | None:
    """Bounded to years 1970..2199 by the parser, so the window arithmetic below cannot overflow."""
    return queryparams.timestamp(request.query_params, name, InvalidBillingInput)


async def earnings(request: Request) -> Response:
    seller_id = _caller(request)
    payouts = _payouts(request)
    since, until = earnings_window(_timestamp(request, "since"), _timestamp(request, "until"), payouts.now())
    report = await seller_earnings(services(request).db, payouts, seller_id, since, until)
    return JSONResponse(earnings_json(report))


async def get_payout_account(request: Request) -> Response:
    row = await _payouts(request).account(_caller(request))
    return JSONResponse(
        {
            "stripe_account_id": row["stripe_account_id"] if row else None,
            "updated_at": iso(row["updated_at"]) if row else None,
        }
    )


async def put_payout_account(request: Request) -> Response:
    seller = _caller(request)
    account = (await read_body(request, PayoutAccountRequest)).stripe_account_id
    payouts = _payouts(request)
    await payouts.set_account(seller, account, ip=request.client.host if request.client else None)
    row = await payouts.account(seller)
    assert row is not None
    return JSONResponse({"stripe_account_id": row["stripe_account_id"], "updated_at": iso(row["updated_at"])})


async def start_onboarding(request: Request) -> Response:
    seller = _caller(request)
    ip = request.client.host if request.client else None
    # The origin, not base_url: under the /api mount base_url ends in /api.
    origin = f"{request.url.scheme}://{request.url.netloc}"
    link = await onboarding_link(services(request), seller, None, origin, ip=ip)
    return JSONResponse({"url": link.url, "stripe_account_id": link.stripe_account_id}, status_code=201)


async def create_payout(request: Request) -> Response:
    seller = _caller(request)
    # An empty body is `{}`: a payout of everything available.
    amount = (await read_body(request, PayoutRequest, empty={})).amount_usd
    key = request_key(seller, request.headers.get("idempotency-key"))
    payout, created = await _payouts(request).request(
        seller, amount, request_key=key, actor_id=seller, ip=request.client.host if request.client else None
    )
    return JSONResponse(payout_json(payout), status_code=201 if created else 200)


async def list_payouts(request: Request) -> Response:
    seller = _caller(request)
    limit = queryparams.page_limit(request.query_params, InvalidBillingInput)
    after = queryparams.cursor(
        request.query_params, InvalidBillingInput, queryparams.cursor_time, queryparams.cursor_uuid
    )
    rows: Sequence[Payout] = await _payouts(request).page(seller, limit + 1, after)
    page = rows[:limit]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = queryparams.encode_cursor(page[-1].created_at, page[-1].id)
    return JSONResponse({"data": [payout_json(p) for p in page], "next_cursor": next_cursor})


async def get_payout(request: Request) -> Response:
    seller = _caller(request)
    return JSONResponse(payout_json(await _payouts(request).get(request.path_params["payout_id"], seller)))


async def mark_paid(request: Request) -> Response:
    admin = _admin(request)
    reference = (await read_body(request, MarkPaid)).reference
    payout = await _payouts(request).mark_paid(request.path_params["payout_id"], reference, admin)
    return JSONResponse(payout_json(payout))


async def approve(request: Request) -> Response:
    admin = _admin(request)
    payout = await _payouts(request).approve(request.path_params["payout_id"], admin)
    return JSONResponse(payout_json(payout))


async def cancel(request: Request) -> Response:
    admin = _admin(request)
    payout = await _payouts(request).cancel(request.path_params["payout_id"], admin)
    return JSONResponse(payout_json(payout))


async def list_open_payouts(request: Request) -> Response:
    _admin(request)
    found = await _payouts(request).open_payouts()
    return JSONResponse({"data": [{**payout_json(o.payout), "seller_email": o.seller_email} for o in found]})


async def run_audit(request: Request) -> Response:
    admin = _admin(request)
    done = await auditruns.run(services(request).db, admin)
    return JSONResponse(done.public(), status_code=201)


async def last_audit(request: Request) -> Response:
    _admin(request)
    found = await auditruns.last(services(request).db)
    return JSONResponse({"run": found.public() if found else None})


IDEMPOTENCY = header(
    IDEMPOTENCY_PARAM,
    {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    "Makes a retry answer the first result",
)


def routes() -> list[ApiRoute]:
    return [
        api_route(
            "GET",
            "/seller/earnings",
            earnings,
            operation_id="getEarnings",
            summary="The caller's earnings, with breakdowns over since..until (at most 366 days)",
            tag="seller",
            params=(time_query("since", "Default: 30 days before until"), time_query("until", "Default: now")),
            answers={200: Earnings},
            auth=Auth.SESSION,
        ),
        api_route(
            "GET",
            "/seller/payout-account",
            get_payout_account,
            operation_id="getPayoutAccount",
            summary="The caller's Stripe Connect account",
            tag="seller",
            answers={200: PayoutAccount},
            auth=Auth.SESSION,
        ),
        api_route(
            "PUT",
            "/seller/payout-account",
            put_payout_account,
            operation_id="putPayoutAccount",
            summary="Set the caller's Stripe Connect account",
            tag="seller",
            body=PayoutAccountRequest,
            answers={200: PayoutAccount},
            auth=Auth.SESSION,
        ),
        api_route(
            "POST",
            "/seller/payout-account/onboarding",
            start_onboarding,
            operation_id="startPayoutOnboarding",
            summary="A fresh Stripe Connect onboarding link (an account link) for the caller's Connect account, "
            "creating an Express account (stored as the payout account) when the caller has none; 409 when Stripe "
            "does not know the stored account (one entered by hand); 503 without Stripe",
            tag="seller",
            answers={201: OnboardingLink},
            auth=Auth.SESSION,
            errors=(409, 503),
        ),
        api_route(
            "POST",
            "/seller/payouts",
            create_payout,
            operation_id="requestPayout",
            summary="Request a payout (default: everything available, floored to the cent; earnings in the holding "
            "period are not available; above the approval amount it waits for an admin; a replay with the same "
            "Idempotency-Key answers 200)",
            tag="seller",
            body=PayoutRequest,
            body_required=False,
            params=(IDEMPOTENCY,),
            answers={201: PayoutShown, 200: PayoutShown},
            auth=Auth.SESSION,
            errors=(409,),
        ),
        api_route(
            "GET",
            "/seller/payouts",
            list_payouts,
            operation_id="listPayouts",
            summary="The caller's payouts, newest first",
            tag="seller",
            params=(CURSOR, LIMIT),
            answers={200: PayoutPage},
            auth=Auth.SESSION,
        ),
        api_route(
            "GET",
            "/seller/payouts/{payout_id}",
            get_payout,
            operation_id="getPayout",
            summary="One of the caller's payouts",
            tag="seller",
            answers={200: PayoutShown},
            auth=Auth.SESSION,
            errors=(404,),
        ),
        api_route(
            "GET",
            "/admin/payouts",
            list_open_payouts,
            operation_id="listOpenPayouts",
            summary="Admin: every seller's pending payouts (awaiting approval first, then oldest first), at most 100",
            tag="admin",
            answers={200: OpenPayoutList},
            auth=Auth.ADMIN,
        ),
        api_route(
            "POST",
            "/admin/audit-runs",
            run_audit,
            operation_id="runLedgerAudit",
            summary="Admin: check the ledger's money invariants now and keep the result",
            tag="admin",
            answers={201: AuditRunShown},
            auth=Auth.ADMIN,
        ),
        api_route(
            "GET",
            "/admin/audit-runs/last",
            last_audit,
            operation_id="getLastLedgerAudit",
            summary="Admin: the last ledger audit's result (from the console, the API or `aichat-gateway audit`)",
            tag="admin",
            answers={200: LastAuditRun},
            auth=Auth.ADMIN,
        ),
        api_route(
            "POST",
            "/admin/payouts/{payout_id}/mark-paid",
            mark_paid,
            operation_id="markPayoutPaid",
            summary="Admin: paid by other means (only from pending)",
            tag="admin",
            body=MarkPaid,
            answers={200: PayoutShown},
            auth=Auth.ADMIN,
            errors=(404, 409),
        ),
        api_route(
            "POST",
            "/admin/payouts/{payout_id}/cancel",
            cancel,
            operation_id="cancelPayout",
            summary="Admin: cancel a pending payout (the amount returns to the seller's earnings)",
            tag="admin",
            answers={200: PayoutShown},
            auth=Auth.ADMIN,
            errors=(404, 409),
        ),
        api_route(
            "POST",
            "/admin/payouts/{payout_id}/approve",
            approve,
            operation_id="approvePayout",
            summary="Admin: approve a pending payout above GATEWAY_PAYOUT_APPROVAL_USD, so Stripe processing sends it",
            tag="admin",
            answers={200: PayoutShown},
            auth=Auth.ADMIN,
            errors=(404, 409),
        ),
    ]
