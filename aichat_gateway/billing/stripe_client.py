"""Stripe, through the official `stripe` SDK: the calls billing makes, typed, and nothing else.

This is the one module that imports `stripe`. Every call goes through a `stripe.StripeClient`
instance (never the SDK's module-level `stripe.api_key`), asynchronously (`client.v1.…_async`) over
`stripe.HTTPXClient`, at `STRIPE_API_BASE` (localstripe in tests). The SDK answers with its own
objects; billing gets plain frozen dataclasses (`PaymentIntent`, `Charge`, `StripeTransfer`) read
from their JSON, so the decisions stay pure functions over plain data.

Why one client per use (`async with StripeClient.open(settings)`): top-ups, webhooks and payouts are
rare next to /v1 traffic, so a fresh connection costs nothing that matters, and nothing outlives the
request that opened it (no pool to close at shutdown, no module state). Tests hand `open` an httpx
transport (a MockTransport) to see and answer every request.

Failures become billing's errors (errors.py): an account link refused for its account → Conflict (409);
Stripe unreachable (`stripe.APIConnectionError`, after
the SDK's one retry) or answering anything but success → PaymentsUnavailable (503); a transfer
Stripe refuses for good → TransferRefused. No message carries the secret key: Stripe's own error
texts are scrubbed first, the key only ever travels in a header, and the SDK's own log lines
(request bodies, answers, error texts) are kept out of ours (config/logging.py).

Webhook signatures are checked by the SDK too (`webhook_signature_matches`); webhooks.py parses the
header and applies the tolerance window with the app's clock around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import stripe

from aichat_gateway.billing.errors import BillingNotFound, Conflict, PaymentsUnavailable
from aichat_gateway.config.settings import Settings

# Stripe answers in well under a second; a webhook handler waits on these calls, and Stripe gives a
# webhook 10+ s before it calls the delivery failed and retries it.
_TIMEOUT = httpx.Timeout(8.0, connect=3.0)
# Two attempts in all, as before the SDK. Its retries resend the same Idempotency-Key (one it makes
# up for a POST without ours), after a short backoff, on a connection error, a 409, a 5xx or
# `Stripe-Should-Retry: true`.
_NETWORK_RETRIES = 1


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    """The fields of a PaymentIntent that billing decides on; amounts in cents."""

    id: str
    status: str
    amount: int
    amount_received: int
    currency: str
    client_secret: str | None
    metadata: Mapping[str, str] = field(default_factory=dict)
    latest_charge: str | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    id: str
    status: str
    amount: int
    amount_refunded: int
    currency: str
    payment_intent: str | None


def amount_received(body: Mapping[str, Any]) -> int:
    """Cents Stripe actually collected for a PaymentIntent.

    Stripe sends `amount_received`. localstripe (the test double) omits it; there the PaymentIntent's
    succeeded, captured charges (`charges.data[]`, or an expanded `latest_charge`) carry the amount.
    """
    if isinstance(body.get("amount_received"), int):
        return int(body["amount_received"])
    charges: list[Any] = []
    listed = body.get("charges")
    if isinstance(listed, Mapping) and isinstance(listed.get("data"), list):
        charges = list(listed["data"])
    elif isinstance(body.get("latest_charge"), Mapping):
        charges = [body["latest_charge"]]
    return sum(
        int(c.get("amount_captured", c.get("amount", 0)))
        for c in charges
        if isinstance(c, Mapping) and c.get("status") == "succeeded" and c.get("captured", True) is True
    )


def parse_payment_intent(body: Mapping[str, Any]) -> PaymentIntent:
    try:
        latest = body.get("latest_charge")
        if isinstance(latest, Mapping):
            latest = latest.get("id")
        metadata = body.get("metadata") or {}
        return PaymentIntent(
            id=str(body["id"]),
            status=str(body["status"]),
            amount=int(body["amount"]),
            amount_received=amount_received(body),
            currency=str(body["currency"]).lower(),
            client_secret=body.get("client_secret"),
            metadata={str(k): str(v) for k, v in metadata.items()},
            latest_charge=str(latest) if latest else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PaymentsUnavailable("Stripe answered a PaymentIntent in an unexpected shape") from None


def parse_charge(body: Mapping[str, Any]) -> Charge:
    try:
        intent = body.get("payment_intent")
        if isinstance(intent, Mapping):
            intent = intent.get("id")
        return Charge(
            id=str(body["id"]),
            status=str(body["status"]),
            amount=int(body["amount"]),
            amount_refunded=int(body.get("amount_refunded") or 0),
            currency=str(body["currency"]).lower(),
            payment_intent=str(intent) if intent else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PaymentsUnavailable("Stripe answered a charge in an unexpected shape") from None


@dataclass(frozen=True, slots=True)
class SetupIntent:
    """A SetupIntent: how the browser's Card Element hands the server a card (confirmCardSetup)."""

    id: str
    status: str
    client_secret: str | None
    customer: str | None
    payment_method: str | None


def parse_setup_intent(body: Mapping[str, Any]) -> SetupIntent:
    def ref(key: str) -> str | None:
        value = body.get(key)
        if isinstance(value, Mapping):
            value = value.get("id")
        return str(value) if value else None

    try:
        return SetupIntent(
            id=str(body["id"]),
            status=str(body["status"]),
            client_secret=body.get("client_secret"),
            customer=ref("customer"),
            payment_method=ref("payment_method"),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PaymentsUnavailable("Stripe answered a SetupIntent in an unexpected shape") from None


@dataclass(frozen=True, slots=True)
class SavedCard:
    """A card PaymentMethod: what a buyer needs to recognise it, nothing that could charge it."""

    id: str
    customer: str | None
    brand: str
    last4: str
    exp_month: int
    exp_year: int


def parse_card(body: Mapping[str, Any]) -> SavedCard:
    try:
        card = body.get("card") or {}
        customer = body.get("customer")
        if isinstance(customer, Mapping):
            customer = customer.get("id")
        return SavedCard(
            id=str(body["id"]),
            customer=str(customer) if customer else None,
            brand=str(card.get("brand") or "card"),
            last4=str(card.get("last4") or "????"),
            exp_month=int(card.get("exp_month") or 0),
            exp_year=int(card.get("exp_year") or 0),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PaymentsUnavailable("Stripe answered a PaymentMethod in an unexpected shape") from None


@dataclass(frozen=True, slots=True)
class CardRefused:
    """Stripe declined the card (402): its message is for the buyer ("Your card was declined.")."""

    message: str


@dataclass(frozen=True, slots=True)
class StripeTransfer:
    """A Connect transfer Stripe made (amount in cents)."""

    id: str
    amount: int
    currency: str
    destination: str


@dataclass(frozen=True, slots=True)
class TransferRefused:
    """Stripe answered a transfer with a final no (bad destination, not enough platform balance...).

    Stripe stores the answer under the Idempotency-Key, so asking again gives the same no: the
    caller may treat it as final. Anything that may change on a retry raises PaymentsUnavailable.
    """

    status: int
    message: str


# Answers that are about the request itself (and replayed as such under its Idempotency-Key): the
# SDK's InvalidRequestError and IdempotencyError (400, 404), CardError (402), PermissionError (403).
# 401 (our key), 409 (a concurrent use of the key), 429 and 5xx may pass: they are not refusals.
TRANSFER_REFUSALS = frozenset({400, 402, 403, 404})
# An account link refused for its account (one typed by hand that is not this platform's, or gone).
_UNKNOWN_ACCOUNT = frozenset({"account_invalid", "resource_missing"})


def parse_transfer(body: Mapping[str, Any]) -> StripeTransfer:
    try:
        destination = body["destination"]
        if isinstance(destination, Mapping):
            destination = destination["id"]
        return StripeTransfer(
            id=str(body["id"]),
            amount=int(body["amount"]),
            currency=str(body["currency"]).lower(),
            destination=str(destination),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PaymentsUnavailable("Stripe answered a transfer in an unexpected shape") from None


def parse_account_id(body: Mapping[str, Any]) -> str:
    account = body.get("id")
    if not isinstance(account, str) or not account.startswith("acct_") or body.get("object", "account") != "account":
        raise PaymentsUnavailable("Stripe answered an account in an unexpected shape")
    return account


def parse_account_link(body: Mapping[str, Any]) -> str:
    """The link's URL; only an https one is handed to a browser to follow."""
    url = body.get("url")
    shaped = body.get("object", "account_link") == "account_link"
    if not isinstance(url, str) or not url.startswith("https://") or not shaped:
        raise PaymentsUnavailable("Stripe answered an account link in an unexpected shape")
    return url


def webhook_signature_matches(payload: bytes, timestamp: int, signatures: Sequence[str], secret: str) -> bool:
    """Does any of these v1 signatures sign "<timestamp>.<payload>" with the secret? The SDK's check
    (HMAC-SHA256, constant-time comparisons), run on the header our parser accepted, rebuilt, so the
    SDK reads exactly the timestamp and signatures we did; its clock check is off (`tolerance=None`):
    the SDK reads the wall clock and refuses only old timestamps, webhooks.py checks both ways with
    the app's clock."""
    header = ",".join([f"t={timestamp}", *(f"v1={signature}" for signature in signatures)])
    try:
        payload.decode("utf-8")  # the SDK signs text; Stripe's bodies are UTF-8 JSON, anything else is not theirs
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
    except (UnicodeDecodeError, stripe.SignatureVerificationError):
        return False
    return True


class _HTTPXOnTransport(stripe.HTTPXClient):
    """`stripe.HTTPXClient` sending through a given httpx transport (tests' MockTransport).

    HTTPXClient builds its own `httpx.AsyncClient` and takes none, so this one swaps in a client on
    the transport; the SDK's request, timeout, retry and error handling stay as they are, except
    that it does not pause before a retry: a test's transport answers at once, and tests never wait.
    If an SDK upgrade renamed the attribute, every test that hands in a transport would fail at
    once (their requests would go to the network instead).
    """

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        super().__init__(timeout=_TIMEOUT)
        self._client_async = httpx.AsyncClient(transport=transport, follow_redirects=False)

    async def sleep_async(self, secs: float) -> None:
        """No backoff before a retry (see the class)."""


class StripeClient:
    """Billing's Stripe calls on one `stripe.StripeClient`; open one per use with `open`."""

    def __init__(self, sdk: stripe.StripeClient, secret_key: str) -> None:
        self._sdk = sdk
        self._secret = secret_key

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> AsyncIterator[StripeClient]:
        if settings.stripe_secret_key is None:
            raise PaymentsUnavailable("payments are not configured (STRIPE_SECRET_KEY is unset)")
        secret = settings.stripe_secret_key.get_secret_value()
        http = stripe.HTTPXClient(timeout=_TIMEOUT) if transport is None else _HTTPXOnTransport(transport)
        try:
            sdk = stripe.StripeClient(
                secret,
                http_client=http,
                base_addresses={"api": settings.stripe_api_base.rstrip("/")},
                max_network_retries=_NETWORK_RETRIES,
            )
            yield cls(sdk, secret)
        finally:
            await http.close_async()  # type: ignore[no-untyped-call]  # unannotated in the SDK

    async def create_customer(self, *, account_id: str, email: str | None, idempotency_key: str) -> str:
        call = self._sdk.v1.customers.create_async(
            {"metadata": {"account_id": account_id}, **({"email": email} if email is not None else {})},
            {"idempotency_key": idempotency_key},
        )
        customer = (await self._answer(call)).get("id")
        if not isinstance(customer, str):
            raise PaymentsUnavailable("Stripe answered a customer without an id")
        return customer

    async def create_payment_intent(
        self,
        *,
        amount_cents: int,
        currency: str,
        customer: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> PaymentIntent:
        call = self._sdk.v1.payment_intents.create_async(
            {"amount": amount_cents, "currency": currency, "customer": customer, "metadata": dict(metadata)},
            {"idempotency_key": idempotency_key},
        )
        return parse_payment_intent(await self._answer(call))

    async def create_setup_intent(
        self, *, customer: str, metadata: Mapping[str, str], idempotency_key: str
    ) -> SetupIntent:
        call = self._sdk.v1.setup_intents.create_async(
            {"customer": customer, "usage": "off_session", "metadata": dict(metadata)},
            {"idempotency_key": idempotency_key},
        )
        return parse_setup_intent(await self._answer(call))

    async def retrieve_setup_intent(self, setup_intent_id: str) -> SetupIntent:
        call = self._sdk.v1.setup_intents.retrieve_async(_path_id(setup_intent_id))
        return parse_setup_intent(await self._answer(call))

    async def pay_payment_intent(self, payment_intent_id: str, payment_method: str) -> PaymentIntent | CardRefused:
        """Set the card on a PaymentIntent and confirm it on the server. A declined card is an
        answer (CardRefused), not an outage; a card that needs 3-D Secure comes back as
        `requires_action` for the browser's confirmCardPayment."""
        intent_id = _path_id(payment_intent_id)
        await self._answer(
            self._sdk.v1.payment_intents.update_async(intent_id, {"payment_method": _path_id(payment_method)})
        )
        try:
            confirmed = await self._sdk.v1.payment_intents.confirm_async(intent_id)
        except stripe.CardError as exc:
            body = exc.json_body if isinstance(exc.json_body, dict) else {}
            return CardRefused(self._scrub(_stripe_message(body)) if body else "Your card was declined.")
        except stripe.StripeError as exc:
            raise self._unavailable(exc) from None
        return parse_payment_intent(_plain(confirmed))

    async def charge_saved_card(
        self,
        *,
        amount_cents: int,
        currency: str,
        customer: str,
        payment_method: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> PaymentIntent | CardRefused:
        """A PaymentIntent created and confirmed off-session on a saved card (auto-recharge): the
        buyer is not there, so a card that needs them (3-D Secure) or a decline is CardRefused."""
        params: Any = {
            "amount": amount_cents,
            "currency": currency,
            "customer": _path_id(customer),
            "payment_method": _path_id(payment_method),
            "metadata": dict(metadata),
            "confirm": True,
            "off_session": True,
        }
        try:
            created = await self._sdk.v1.payment_intents.create_async(params, {"idempotency_key": idempotency_key})
        except stripe.CardError as exc:
            body = exc.json_body if isinstance(exc.json_body, dict) else {}
            return CardRefused(self._scrub(_stripe_message(body)) if body else "Your card was declined.")
        except stripe.StripeError as exc:
            raise self._unavailable(exc) from None
        intent = parse_payment_intent(_plain(created))
        if intent.status == "requires_action":
            return CardRefused("the card asks for authentication, which needs you present")
        return intent

    async def list_cards(self, customer: str) -> list[SavedCard]:
        call = self._sdk.v1.payment_methods.list_async({"customer": _path_id(customer), "type": "card", "limit": 100})
        listed = (await self._answer(call)).get("data")
        return [parse_card(item) for item in listed if isinstance(item, Mapping)] if isinstance(listed, list) else []

    async def retrieve_card(self, payment_method: str) -> SavedCard:
        return parse_card(await self._answer(self._sdk.v1.payment_methods.retrieve_async(_path_id(payment_method))))

    async def attach_card(self, payment_method: str, customer: str) -> None:
        await self._answer(
            self._sdk.v1.payment_methods.attach_async(_path_id(payment_method), {"customer": _path_id(customer)})
        )

    async def detach_card(self, payment_method: str) -> None:
        await self._answer(self._sdk.v1.payment_methods.detach_async(_path_id(payment_method)))

    async def default_card(self, customer: str) -> str | None:
        body = await self._answer(self._sdk.v1.customers.retrieve_async(_path_id(customer)))
        settings = body.get("invoice_settings") or {}
        default = settings.get("default_payment_method") if isinstance(settings, Mapping) else None
        if isinstance(default, Mapping):
            default = default.get("id")
        return str(default) if default else None

    async def set_default_card(self, customer: str, payment_method: str) -> None:
        params: Any = {"invoice_settings": {"default_payment_method": _path_id(payment_method)}}
        await self._answer(self._sdk.v1.customers.update_async(_path_id(customer), params))

    async def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        call = self._sdk.v1.payment_intents.retrieve_async(_path_id(payment_intent_id))
        return parse_payment_intent(await self._answer(call))

    async def retrieve_charge(self, charge_id: str) -> Charge:
        return parse_charge(await self._answer(self._sdk.v1.charges.retrieve_async(_path_id(charge_id))))

    async def create_transfer(
        self,
        *,
        amount_cents: int,
        currency: str,
        destination: str,
        metadata: Mapping[str, str],
        idempotency_key: str,
    ) -> StripeTransfer | TransferRefused:
        """Move money from the platform's Stripe balance to a connected account (a seller payout)."""
        try:
            transfer = await self._sdk.v1.transfers.create_async(
                {"amount": amount_cents, "currency": currency, "destination": destination, "metadata": dict(metadata)},
                {"idempotency_key": idempotency_key},
            )
        except stripe.StripeError as exc:
            if (
                not isinstance(exc, stripe.APIConnectionError)
                and exc.http_status in TRANSFER_REFUSALS
                and isinstance(exc.json_body, dict)
            ):
                return TransferRefused(exc.http_status, self._scrub(_stripe_message(exc.json_body)))
            raise self._unavailable(exc) from None
        return parse_transfer(_plain(transfer))

    async def create_connect_account(
        self,
        *,
        email: str | None,
        metadata: Mapping[str, str],
        idempotency_key: str,
        country: str | None = None,
    ) -> str:
        """An Express connected account that can receive transfers (a seller's payouts); its id.
        Stripe asks the seller for the rest (identity, bank) on the onboarding page of an account link."""
        params: Any = {
            "type": "express",
            "capabilities": {"transfers": {"requested": True}},
            "metadata": dict(metadata),
            **({"email": email} if email is not None else {}),
            **({"country": country} if country is not None else {}),
        }
        body = await self._answer(self._sdk.v1.accounts.create_async(params, {"idempotency_key": idempotency_key}))
        return parse_account_id(body)

    async def create_account_link(self, *, account_id: str, refresh_url: str, return_url: str) -> str:
        """A one-time onboarding URL on connect.stripe.com for the account (it expires within minutes,
        so each visit asks for a new one)."""
        params: Any = {
            "account": _path_id(account_id),
            "refresh_url": refresh_url,
            "return_url": return_url,
            "type": "account_onboarding",
        }
        try:
            link = await self._sdk.v1.account_links.create_async(params)
        except (stripe.InvalidRequestError, stripe.PermissionError) as exc:
            if (
                getattr(exc, "param", None) == "account"
                or exc.code in _UNKNOWN_ACCOUNT
                or exc.http_status in (403, 404)
            ):
                raise Conflict(
                    f"Stripe does not know {account_id} as a Connect account of this gateway: enter the id of "
                    "one that is, or ask the operator to clear it",
                    param="stripe_account_id",
                ) from None
            raise self._unavailable(exc) from None
        except stripe.StripeError as exc:
            raise self._unavailable(exc) from None
        return parse_account_link(_plain(link))

    async def _answer(self, call: Awaitable[stripe.StripeObject]) -> dict[str, Any]:
        """The SDK's answer as plain JSON data; any SDK error as PaymentsUnavailable."""
        try:
            return _plain(await call)
        except stripe.StripeError as exc:
            raise self._unavailable(exc) from None

    def _unavailable(self, exc: stripe.StripeError) -> PaymentsUnavailable | BillingNotFound:
        """What a Stripe error means to our caller. An id Stripe does not know (a card or
        SetupIntent id the buyer sent, or another account's) is the caller's 404, not an outage."""
        if isinstance(exc, stripe.InvalidRequestError) and (exc.http_status == 404 or exc.code == "resource_missing"):
            return BillingNotFound("Stripe has no such object for this account")
        if isinstance(exc, stripe.APIConnectionError):
            cause = exc.__cause__ or exc  # the httpx error the SDK wrapped, named as before the SDK
            return PaymentsUnavailable(f"Stripe did not answer ({type(cause).__name__})")
        # For an answer that is not JSON the SDK puts the response headers in json_body.
        if not isinstance(exc.json_body, dict):
            return PaymentsUnavailable(f"Stripe answered {exc.http_status} without JSON")
        return PaymentsUnavailable(f"Stripe answered {exc.http_status}: {self._scrub(_stripe_message(exc.json_body))}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text


def _plain(answer: object) -> dict[str, Any]:
    """An SDK object as the JSON Stripe sent (nested objects as dicts): the parsers read plain data."""
    if not isinstance(answer, stripe.StripeObject):
        raise PaymentsUnavailable("Stripe answered in an unexpected shape")
    return answer.to_dict()


def _stripe_message(body: Mapping[str, Any]) -> str:
    if isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        if isinstance(message, str):
            return message[:300]
    return "no error message"


def _path_id(value: str) -> str:
    """Stripe ids are [A-Za-z0-9_]; anything else (a slash, a dot) must never steer the URL path."""
    if not value or not all(ch.isalnum() or ch == "_" for ch in value):
        raise PaymentsUnavailable("refusing a malformed Stripe object id")
    return value
