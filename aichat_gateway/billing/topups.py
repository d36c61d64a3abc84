"""Top-ups: a buyer asks for one, the gateway creates a Stripe PaymentIntent, and the browser pays it
with the returned `client_secret`. Money moves only when a verified webhook says Stripe got it
(webhooks.py); this module never credits anything.

Routes (mounted under /api): `POST /billing/topups`, `GET /billing/topups/{id}` for the buyer, and
`POST /webhooks/stripe` for Stripe (no session: its signature is its authentication). Handlers use
the app's billing services (settings, db, clock, and the hot balance view's credit hook
`on_balance_change`); the Stripe client is opened per request (top-ups are rare; nothing outlives
the request).

Never two PaymentIntents for one top-up: our top-up row (and its id) exists before Stripe is called,
and the PaymentIntent is created with `Idempotency-Key: topup-<id>`, so a retried create returns the
same intent. A buyer's Stripe customer is created once (`Idempotency-Key: customer-<user id>`, and a
unique row per user).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.apiroute import STRING, ApiRoute, Auth, api_route, header
from aichat_gateway.billing.amounts import parse_usd, usd
from aichat_gateway.billing.api import read_body, read_capped
from aichat_gateway.billing.errors import (
    BillingNotFound,
    InvalidBillingInput,
    NotAuthenticated,
    NotPermitted,
    PaymentsUnavailable,
    WebhookRejected,
)
from aichat_gateway.billing.schemas import CreatedTopup as CreatedTopupShown
from aichat_gateway.billing.schemas import StripeEventBody, Topup, TopupRequest, WebhookReceipt
from aichat_gateway.billing.services import services
from aichat_gateway.billing.stripe_client import StripeClient
from aichat_gateway.billing.stripe_effects import CURRENCY, MICRO_PER_CENT
from aichat_gateway.billing.webhooks import StripeWebhooks, parse_event, verify_signature
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.settings import Settings

log = get_logger(__name__)

MAX_WEBHOOK_BODY = 512 * 1024


@dataclass(frozen=True, slots=True)
class TopupLimits:
    min_micro: int
    max_micro: int

    @classmethod
    def from_settings(cls, settings: Settings) -> TopupLimits:
        return cls(_decimal_micro(settings.topup_min_usd), _decimal_micro(settings.topup_max_usd))


def _decimal_micro(value: Decimal) -> int:
    return parse_usd(format(value, "f"), "settings")


def topup_amount(amount: int, limits: TopupLimits) -> int:
    """A top-up's amount (micro-USD, read from its decimal string by schemas.TopupRequest): whole
    cents, within the limits."""
    if amount % MICRO_PER_CENT:
        raise InvalidBillingInput("amount_usd must be whole cents", param="amount_usd")
    if not limits.min_micro <= amount <= limits.max_micro:
        raise InvalidBillingInput(
            f"amount_usd must be between {usd(limits.min_micro)} and {usd(limits.max_micro)}", param="amount_usd"
        )
    return amount


@dataclass(frozen=True, slots=True)
class CreatedTopup:
    id: str
    payment_intent_id: str
    client_secret: str | None
    amount_micro: int
    status: str


class TopUps:
    def __init__(self, db: asyncpg.Pool, stripe: StripeClient, new_id: Callable[[], uuid.UUID] = uuid.uuid4) -> None:
        self._db = db
        self._stripe = stripe
        self._new_id = new_id

    async def create(self, user_id: str, amount_micro: int) -> CreatedTopup:
        topup_id = str(self._new_id())
        await self._db.execute(
            "INSERT INTO topups (id, user_id, amount_micro, status) VALUES ($1, $2, $3, 'creating')",
            topup_id,
            user_id,
            amount_micro,
        )
        try:
            customer = await stripe_customer(self._db, self._stripe, user_id)
            intent = await self._stripe.create_payment_intent(
                amount_cents=amount_micro // MICRO_PER_CENT,
                currency=CURRENCY,
                customer=customer,
                metadata={"account_id": user_id, "topup_id": topup_id},
                idempotency_key=f"topup-{topup_id}",
            )
        except PaymentsUnavailable:
            # 'failed' is not final: should the intent exist after all, its webhook still finds
            # this row through the metadata and settles it by what Stripe says.
            await self._db.execute("UPDATE topups SET status = 'failed', updated_at = now() WHERE id = $1", topup_id)
            raise
        await self._db.execute(
            "UPDATE topups SET payment_intent_id = $2, status = 'pending', updated_at = now() "
            "WHERE id = $1 AND status = 'creating'",
            topup_id,
            intent.id,
        )
        return CreatedTopup(topup_id, intent.id, intent.client_secret, amount_micro, "pending")


async def stripe_customer(db: asyncpg.Pool, stripe: StripeClient, user_id: str) -> str:
    """The buyer's one Stripe Customer, created on first use (top-ups and saved cards share it)."""
    stored: str | None = await db.fetchval("SELECT customer_id FROM stripe_customers WHERE user_id = $1", user_id)
    if stored is not None:
        return stored
    email: str | None = await db.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    created = await stripe.create_customer(account_id=user_id, email=email, idempotency_key=f"customer-{user_id}")
    await db.execute(
        "INSERT INTO stripe_customers (user_id, customer_id) VALUES ($1, $2) ON CONFLICT (user_id) DO NOTHING",
        user_id,
        created,
    )
    # A concurrent first top-up may have stored its customer first; everyone uses that one.
    winner: str = await db.fetchval("SELECT customer_id FROM stripe_customers WHERE user_id = $1", user_id)
    return winner


async def topup_json(db: asyncpg.Pool, user_id: str, topup_id: str) -> dict[str, Any]:
    try:
        uuid.UUID(topup_id)
    except ValueError:
        raise BillingNotFound("no such top-up") from None
    row = await db.fetchrow("SELECT * FROM topups WHERE id = $1 AND user_id = $2", topup_id, user_id)
    if row is None:
        raise BillingNotFound("no such top-up")
    return {
        "id": str(row["id"]),
        "payment_intent_id": row["payment_intent_id"],
        "amount_usd": usd(row["amount_micro"]),
        "credited_usd": usd(row["credited_micro"]),
        "refunded_usd": usd(row["refunded_micro"]),
        "status": row["status"],
        "created_at": _iso(row["created_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- HTTP -------------------------------------------------------------------------------------


def session_buyer(request: Request) -> str:
    if "csrf_rejected" in request.auth.scopes:
        raise NotPermitted("missing or wrong CSRF token (header x-csrf-token)")
    if not request.user.is_authenticated or "authenticated" not in request.auth.scopes:
        raise NotAuthenticated("authentication required: send Authorization: Bearer <access_token>")
    return str(request.user.identity)


async def create_topup(request: Request) -> Response:
    user_id = session_buyer(request)
    svc = services(request)
    amount = topup_amount((await read_body(request, TopupRequest)).amount_usd, TopupLimits.from_settings(svc.settings))
    async with StripeClient.open(svc.settings) as stripe:
        created = await TopUps(svc.db, stripe).create(user_id, amount)
    log.info("topup_created", topup_id=created.id, payment_intent_id=created.payment_intent_id)
    return JSONResponse(
        {
            "id": created.id,
            "payment_intent_id": created.payment_intent_id,
            "client_secret": created.client_secret,
            "amount_usd": usd(created.amount_micro),
            "status": created.status,
        },
        status_code=201,
    )


async def get_topup(request: Request) -> Response:
    user_id = session_buyer(request)
    return JSONResponse(await topup_json(services(request).db, user_id, request.path_params["topup_id"]))


async def stripe_webhook(request: Request) -> Response:
    svc = services(request)
    settings: Settings = svc.settings
    if settings.stripe_webhook_secret is None:
        raise PaymentsUnavailable("Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET is unset)")
    try:
        raw = await read_capped(request, MAX_WEBHOOK_BODY, error=WebhookRejected)
        now = svc.clock()
        verify_signature(
            raw,
            request.headers.get("stripe-signature"),
            settings.stripe_webhook_secret.get_secret_value(),
            now=now,
            tolerance=settings.stripe_webhook_tolerance,
        )
        event = parse_event(raw)
    except WebhookRejected as exc:
        log.warning("stripe_webhook_rejected", reason=exc.message)
        raise
    async with StripeClient.open(settings) as stripe:
        outcome = await StripeWebhooks(svc.db, stripe, svc.on_balance_change).handle(event)
    log.info("stripe_webhook", event_id=event.id, event_type=event.type, outcome=outcome.value)
    return JSONResponse({"received": True, "outcome": outcome.value})


def routes() -> list[ApiRoute]:
    return [
        api_route(
            "POST",
            "/billing/topups",
            create_topup,
            operation_id="createTopup",
            summary="Start a Stripe top-up (credited only by the verified webhook)",
            tag="billing",
            body=TopupRequest,
            answers={201: CreatedTopupShown},
            auth=Auth.SESSION,
        ),
        api_route(
            "GET",
            "/billing/topups/{topup_id}",
            get_topup,
            operation_id="getTopup",
            summary="One of the caller's top-ups",
            tag="billing",
            answers={200: Topup},
            auth=Auth.SESSION,
            errors=(404,),
        ),
        api_route(
            "POST",
            "/webhooks/stripe",
            stripe_webhook,
            operation_id="stripeWebhook",
            summary="Stripe's signed events (the signature is the authentication)",
            tag="billing",
            body=StripeEventBody,
            params=(header("Stripe-Signature", STRING, "t=<unix time>,v1=<HMAC-SHA256>", required=True),),
            answers={200: WebhookReceipt},
            errors=(503,),
        ),
    ]
