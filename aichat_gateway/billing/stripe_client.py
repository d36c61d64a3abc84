"""A thin async Stripe client over httpx: the calls billing makes, and nothing else.

Why not the `stripe` SDK: it keeps its API key and base URL in module globals (or a client object
whose transport is synchronous unless configured per call), and four form-encoded requests do not
need it. Why one client per use (`async with StripeClient.open(settings)`): top-ups and webhooks are
rare next to /v1 traffic, so a fresh connection costs nothing that matters, and nothing outlives the
request that opened it (no pool to close at shutdown, no module state).

Every failure becomes PaymentsUnavailable, whose message never carries the secret key: Stripe's own
error texts are passed through `_scrub` first, and the key only ever travels in a header.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from aichat_gateway.billing.errors import PaymentsUnavailable
from aichat_gateway.config.settings import Settings

# Stripe answers in well under a second; a webhook handler waits on these calls, and Stripe gives a
# webhook 10+ s before it calls the delivery failed and retries it.
_TIMEOUT = httpx.Timeout(8.0, connect=3.0)
# Transport errors only: a POST is safe to resend because it carries an Idempotency-Key.
_ATTEMPTS = 2


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


def form_fields(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Stripe's form encoding: nested mappings in bracket notation (`metadata[account_id]=...`),
    sequences as `key[0]`, booleans as `true`/`false`; None is left out."""
    fields: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            fields.extend(form_fields(value, name))
        elif isinstance(value, list | tuple):
            fields.extend(form_fields({str(i): v for i, v in enumerate(value)}, name))
        elif isinstance(value, bool):
            fields.append((name, "true" if value else "false"))
        else:
            fields.append((name, str(value)))
    return fields


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


# Answers that are about the request itself (and replayed as such under its Idempotency-Key).
# 401 (our key), 409 (a concurrent use of the key), 429 and 5xx may pass: they are not refusals.
TRANSFER_REFUSALS = frozenset({400, 402, 403, 404})


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


class StripeClient:
    def __init__(self, http: httpx.AsyncClient, secret_key: str) -> None:
        self._http = http
        self._secret = secret_key

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> AsyncIterator[StripeClient]:
        if settings.stripe_secret_key is None:
            raise PaymentsUnavailable("payments are not configured (STRIPE_SECRET_KEY is unset)")
        secret = settings.stripe_secret_key.get_secret_value()
        async with httpx.AsyncClient(
            base_url=settings.stripe_api_base.rstrip("/"),
            headers={"Authorization": f"Bearer {secret}"},
            timeout=_TIMEOUT,
            transport=transport,
            follow_redirects=False,
        ) as http:
            yield cls(http, secret)

    async def create_customer(self, *, account_id: str, email: str | None, idempotency_key: str) -> str:
        body = await self._request(
            "POST",
            "/v1/customers",
            {"email": email, "metadata": {"account_id": account_id}},
            idempotency_key=idempotency_key,
        )
        customer = body.get("id")
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
        body = await self._request(
            "POST",
            "/v1/payment_intents",
            {"amount": amount_cents, "currency": currency, "customer": customer, "metadata": dict(metadata)},
            idempotency_key=idempotency_key,
        )
        return parse_payment_intent(body)

    async def retrieve_payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        return parse_payment_intent(await self._request("GET", f"/v1/payment_intents/{_path_id(payment_intent_id)}"))

    async def retrieve_charge(self, charge_id: str) -> Charge:
        return parse_charge(await self._request("GET", f"/v1/charges/{_path_id(charge_id)}"))

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
        status, body = await self._send(
            "POST",
            "/v1/transfers",
            {"amount": amount_cents, "currency": currency, "destination": destination, "metadata": dict(metadata)},
            idempotency_key=idempotency_key,
        )
        if status in TRANSFER_REFUSALS:
            return TransferRefused(status, self._scrub(_stripe_message(body)))
        if status >= 400 or not isinstance(body, dict):
            raise PaymentsUnavailable(f"Stripe answered {status}: {self._scrub(_stripe_message(body))}")
        return parse_transfer(body)

    async def _request(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        status, body = await self._send(method, path, params, idempotency_key=idempotency_key)
        if status >= 400 or not isinstance(body, dict):
            raise PaymentsUnavailable(f"Stripe answered {status}: {self._scrub(_stripe_message(body))}")
        return body

    async def _send(
        self, method: str, path: str, params: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> tuple[int, Any]:
        """(status, parsed JSON body); PaymentsUnavailable if Stripe did not answer or not in JSON."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        data = dict(form_fields(params)) if params is not None else None
        response: httpx.Response | None = None
        for attempt in range(_ATTEMPTS):
            try:
                response = await self._http.request(method, path, data=data, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt + 1 == _ATTEMPTS:
                    raise PaymentsUnavailable(f"Stripe did not answer ({type(exc).__name__})") from None
        assert response is not None
        try:
            body = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise PaymentsUnavailable(f"Stripe answered {response.status_code} without JSON") from None
        return response.status_code, body

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text


def _stripe_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
        if isinstance(message, str):
            return message[:300]
    return "no error message"


def _path_id(value: str) -> str:
    """Stripe ids are [A-Za-z0-9_]; anything else (a slash, a dot) must never steer the URL path."""
    if not value or not all(ch.isalnum() or ch == "_" for ch in value):
        raise PaymentsUnavailable("refusing a malformed Stripe object id")
    return value
