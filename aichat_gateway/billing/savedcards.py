"""Saved cards: the card PaymentMethods on the buyer's Stripe Customer (list, add, remove, default).

A card is added by the browser's Card Element through a SetupIntent (`stripe.confirmCardSetup`),
then attached to the Customer here; a card used to pay a top-up is attached the same way
(cardpay.py), so every card a buyer paid with is listed and can be removed. The first card becomes
the default. Stripe holds the cards: we store nothing about them, and every call checks that the
card is on *this* buyer's Customer (a PaymentMethod id is not a secret).

Routes (under /api): `GET /billing/cards`, `POST /billing/cards`, `DELETE /billing/cards/{id}`,
`POST /billing/cards/{id}/default`.
"""

from __future__ import annotations

from typing import Annotated

import asyncpg
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.apibody import Answer, Body
from aichat_gateway.apiroute import ApiRoute, Auth, api_route
from aichat_gateway.billing.api import read_body
from aichat_gateway.billing.errors import BillingNotFound, InvalidBillingInput
from aichat_gateway.billing.services import services
from aichat_gateway.billing.stripe_client import SavedCard, StripeClient
from aichat_gateway.billing.topups import session_buyer, stripe_customer

STRIPE_ID = r"^[A-Za-z0-9_]{1,255}$"


class AddCardRequest(Body):
    setup_intent_id: Annotated[str, Field(pattern=STRIPE_ID)]


class CardShown(Answer):
    id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    default: bool


class CardList(Answer):
    data: list[CardShown]


def card_json(card: SavedCard, default: str | None) -> dict[str, object]:
    return {
        "id": card.id,
        "brand": card.brand,
        "last4": card.last4,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
        "default": card.id == default,
    }


class SavedCards:
    def __init__(self, db: asyncpg.Pool, stripe: StripeClient) -> None:
        self._db = db
        self._stripe = stripe

    async def listed(self, user_id: str) -> tuple[list[SavedCard], str | None]:
        """The buyer's cards and the default one's id; no Stripe call for a buyer without a Customer."""
        customer = await existing_customer(self._db, user_id)
        if customer is None:
            return [], None
        cards = await self._stripe.list_cards(customer)
        return cards, await self._stripe.default_card(customer)

    async def add_from_setup(self, user_id: str, setup_intent_id: str) -> SavedCard:
        """The card of a succeeded SetupIntent of this buyer's, attached and (if the first) default."""
        customer = await stripe_customer(self._db, self._stripe, user_id)
        setup = await self._stripe.retrieve_setup_intent(setup_intent_id)
        if setup.customer != customer or setup.status != "succeeded" or setup.payment_method is None:
            raise InvalidBillingInput("the card was not set up: enter it again", param="setup_intent_id")
        return await self.keep(customer, setup.payment_method)

    async def keep(self, customer: str, payment_method: str) -> SavedCard:
        """Attach a card set up for this Customer (Stripe attaches on set-up; localstripe does not)."""
        card = await self._stripe.retrieve_card(payment_method)
        if card.customer not in (None, customer):
            raise InvalidBillingInput("no such card", param="payment_method_id")
        if card.customer is None:
            await self._stripe.attach_card(payment_method, customer)
        if await self._stripe.default_card(customer) is None:
            await self._stripe.set_default_card(customer, payment_method)
        return card

    async def owned(self, user_id: str, payment_method: str) -> tuple[str, SavedCard]:
        """(the Customer, the card) when the card is on this buyer's Customer; else not found."""
        customer = await existing_customer(self._db, user_id)
        if customer is None:
            raise BillingNotFound("no such card")
        card = await self._stripe.retrieve_card(payment_method)
        if card.customer != customer:
            raise BillingNotFound("no such card")
        return customer, card

    async def remove(self, user_id: str, payment_method: str) -> None:
        await self.owned(user_id, payment_method)
        await self._stripe.detach_card(payment_method)

    async def make_default(self, user_id: str, payment_method: str) -> None:
        customer, _ = await self.owned(user_id, payment_method)
        await self._stripe.set_default_card(customer, payment_method)


async def existing_customer(db: asyncpg.Pool, user_id: str) -> str | None:
    found: str | None = await db.fetchval("SELECT customer_id FROM stripe_customers WHERE user_id = $1", user_id)
    return found


# --- HTTP -------------------------------------------------------------------------------------


async def list_cards(request: Request) -> Response:
    user_id = session_buyer(request)
    svc = services(request)
    async with StripeClient.open(svc.settings) as stripe:
        cards, default = await SavedCards(svc.db, stripe).listed(user_id)
    return JSONResponse({"data": [card_json(card, default) for card in cards]})


async def add_card(request: Request) -> Response:
    user_id = session_buyer(request)
    svc = services(request)
    body = await read_body(request, AddCardRequest)
    async with StripeClient.open(svc.settings) as stripe:
        saved = SavedCards(svc.db, stripe)
        card = await saved.add_from_setup(user_id, body.setup_intent_id)
        _, default = await saved.listed(user_id)
    return JSONResponse(card_json(card, default), status_code=201)


async def remove_card(request: Request) -> Response:
    user_id = session_buyer(request)
    svc = services(request)
    async with StripeClient.open(svc.settings) as stripe:
        await SavedCards(svc.db, stripe).remove(user_id, _card_id(request))
    return Response(status_code=204)


async def make_default(request: Request) -> Response:
    user_id = session_buyer(request)
    svc = services(request)
    async with StripeClient.open(svc.settings) as stripe:
        await SavedCards(svc.db, stripe).make_default(user_id, _card_id(request))
    return JSONResponse({"id": _card_id(request), "default": True})


def _card_id(request: Request) -> str:
    card: str = request.path_params["card_id"]
    if not card or not all(ch.isalnum() or ch == "_" for ch in card) or len(card) > 255:
        raise BillingNotFound("no such card")
    return card


def routes() -> list[ApiRoute]:
    return [
        api_route(
            "GET",
            "/billing/cards",
            list_cards,
            operation_id="listCards",
            summary="The caller's saved cards (on their Stripe Customer)",
            tag="billing",
            answers={200: CardList},
            auth=Auth.SESSION,
            errors=(503,),
        ),
        api_route(
            "POST",
            "/billing/cards",
            add_card,
            operation_id="addCard",
            summary="Save the card of a succeeded SetupIntent (the first card becomes the default)",
            tag="billing",
            body=AddCardRequest,
            answers={201: CardShown},
            auth=Auth.SESSION,
            errors=(404, 503),
        ),
        api_route(
            "DELETE",
            "/billing/cards/{card_id}",
            remove_card,
            operation_id="removeCard",
            summary="Remove a saved card",
            tag="billing",
            answers={204: None},
            auth=Auth.SESSION,
            errors=(404, 503),
        ),
        api_route(
            "POST",
            "/billing/cards/{card_id}/default",
            make_default,
            operation_id="makeCardDefault",
            summary="Make a saved card the default",
            tag="billing",
            body=None,
            answers={200: None},
            auth=Auth.SESSION,
            errors=(404, 503),
        ),
    ]
