"""Paying a top-up with a card typed into Stripe's Card Element.

The browser never sends card numbers to us. It confirms a SetupIntent with the Card Element
(`stripe.confirmCardSetup`), which gives the buyer's Stripe Customer a PaymentMethod; the server
then puts that PaymentMethod on the top-up's PaymentIntent and confirms it. A card that needs
3-D Secure comes back `requires_action` and the browser finishes it with
`stripe.confirmCardPayment(client_secret)`. A declined card is CardDeclined with Stripe's words.

Why not `confirmCardPayment(client_secret, {payment_method: {card}})` alone: localstripe, the Stripe
the tests run against, implements confirmCardPayment only as the 3-D Secure step and ignores the
card; confirmCardSetup it implements in full. This flow is one real Stripe documents too
("finalize payments on the server"), and it leaves the card saved to the Customer.

Nothing here credits the balance: that is the verified webhook's job (webhooks.py), as for every
top-up.

A saved card (savedcards.py) pays the same way without the Card Element (`payment_method_id`).

Routes (under /api): `POST /billing/setup_intents`, `POST /billing/topups/{id}/pay`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from pydantic import Field, model_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.apibody import Answer, Body
from aichat_gateway.apiroute import ApiRoute, Auth, api_route
from aichat_gateway.billing.api import read_body
from aichat_gateway.billing.errors import BillingNotFound, CardDeclined, Conflict, InvalidBillingInput
from aichat_gateway.billing.savedcards import SavedCards
from aichat_gateway.billing.services import services
from aichat_gateway.billing.stripe_client import CardRefused, StripeClient
from aichat_gateway.billing.topups import session_buyer, stripe_customer
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)

STRIPE_ID = r"^[A-Za-z0-9_]{1,255}$"


class PayTopupRequest(Body):
    """One of: the SetupIntent the Card Element just confirmed, or a saved card's id."""

    setup_intent_id: Annotated[str | None, Field(pattern=STRIPE_ID)] = None
    payment_method_id: Annotated[str | None, Field(pattern=STRIPE_ID)] = None

    @model_validator(mode="after")
    def one_card(self) -> PayTopupRequest:
        if (self.setup_intent_id is None) == (self.payment_method_id is None):
            raise ValueError("send setup_intent_id or payment_method_id, one of them")
        return self


class CreatedSetupIntent(Answer):
    id: str
    client_secret: str


class PaidTopup(Answer):
    id: uuid.UUID
    status: str
    requires_action: bool


@dataclass(frozen=True, slots=True)
class CardSetup:
    id: str
    client_secret: str


@dataclass(frozen=True, slots=True)
class Payment:
    topup_id: str
    status: str  # Stripe's PaymentIntent status: succeeded, processing, requires_action...

    @property
    def requires_action(self) -> bool:
        return self.status == "requires_action"


class CardPayments:
    def __init__(self, db: asyncpg.Pool, stripe: StripeClient) -> None:
        self._db = db
        self._stripe = stripe

    async def setup(self, user_id: str) -> CardSetup:
        customer = await stripe_customer(self._db, self._stripe, user_id)
        created = await self._stripe.create_setup_intent(
            customer=customer, metadata={"account_id": user_id}, idempotency_key=f"setup-{uuid.uuid4()}"
        )
        if created.client_secret is None:
            raise Conflict("Stripe gave no client secret for the card set-up")
        return CardSetup(created.id, created.client_secret)

    async def pay(
        self, user_id: str, topup_id: str, *, setup_intent_id: str | None = None, payment_method_id: str | None = None
    ) -> Payment:
        row = await _own_topup(self._db, user_id, topup_id)
        if row["status"] != "pending" or row["payment_intent_id"] is None:
            raise Conflict(f"this top-up is {row['status']}, not waiting for a card")
        cards = SavedCards(self._db, self._stripe)
        if payment_method_id is not None:
            customer, card = await cards.owned(user_id, payment_method_id)
            method = card.id
        else:
            customer = await stripe_customer(self._db, self._stripe, user_id)
            setup = await self._stripe.retrieve_setup_intent(str(setup_intent_id))
            # Only a card this buyer set up: a SetupIntent id is not a secret, so another's must not pay.
            if setup.customer != customer or setup.status != "succeeded" or setup.payment_method is None:
                raise InvalidBillingInput("the card was not set up: enter it again", param="setup_intent_id")
            method = setup.payment_method
        paid = await self._stripe.pay_payment_intent(row["payment_intent_id"], method)
        if isinstance(paid, CardRefused):
            log.info("topup_card_declined", topup_id=topup_id)
            raise CardDeclined(paid.message, param="card")
        if payment_method_id is None:
            await cards.keep(customer, method)  # a card that paid is listed with the saved ones
        return Payment(topup_id, paid.status)


async def _own_topup(db: asyncpg.Pool, user_id: str, topup_id: str) -> asyncpg.Record:
    try:
        uuid.UUID(topup_id)
    except ValueError:
        raise BillingNotFound("no such top-up") from None
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT id, status, payment_intent_id FROM topups WHERE id = $1 AND user_id = $2", topup_id, user_id
    )
    if row is None:
        raise BillingNotFound("no such top-up")
    return row


# --- HTTP -------------------------------------------------------------------------------------


async def create_setup_intent(request: Request) -> Response:
    user_id = session_buyer(request)
    svc = services(request)
    async with StripeClient.open(svc.settings) as stripe:
        setup = await CardPayments(svc.db, stripe).setup(user_id)
    return JSONResponse({"id": setup.id, "client_secret": setup.client_secret}, status_code=201)


async def pay_topup(request: Request) -> Response:
    user_id = session_buyer(request)
    svc = services(request)
    body = await read_body(request, PayTopupRequest)
    async with StripeClient.open(svc.settings) as stripe:
        paid = await CardPayments(svc.db, stripe).pay(
            user_id,
            request.path_params["topup_id"],
            setup_intent_id=body.setup_intent_id,
            payment_method_id=body.payment_method_id,
        )
    log.info("topup_paid", topup_id=paid.topup_id, status=paid.status)
    return JSONResponse({"id": paid.topup_id, "status": paid.status, "requires_action": paid.requires_action})


def routes() -> list[ApiRoute]:
    return [
        api_route(
            "POST",
            "/billing/setup_intents",
            create_setup_intent,
            operation_id="createSetupIntent",
            summary="A SetupIntent for the browser's Card Element (confirmCardSetup)",
            tag="billing",
            body=None,
            answers={201: CreatedSetupIntent},
            auth=Auth.SESSION,
            errors=(409, 503),
        ),
        api_route(
            "POST",
            "/billing/topups/{topup_id}/pay",
            pay_topup,
            operation_id="payTopup",
            summary="Pay a pending top-up with the card of a succeeded SetupIntent (credited by the webhook)",
            tag="billing",
            body=PayTopupRequest,
            answers={200: PaidTopup},
            auth=Auth.SESSION,
            errors=(404, 409, 503),
        ),
    ]
