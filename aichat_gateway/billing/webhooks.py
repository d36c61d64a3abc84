"""Stripe webhooks: signature verification on the raw body, then each event's effect on a top-up.

Verification (pure): `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`, where each v1 is
HMAC-SHA256(webhook secret, "<t>.<raw body>"). The header is parsed here, strictly and bounded
(one ASCII-digit timestamp, at most 16 v1s of 64 hex digits); the signatures are checked by the
Stripe SDK (stripe_client.webhook_signature_matches: any one matching v1 is enough, as Stripe sends
one per active secret while a secret is rolled; comparisons are constant-time); then a timestamp
further than the tolerance from the app's clock, either way, is refused here (a captured request
cannot be replayed later). The SDK's own clock check is not used: it reads the wall clock rather
than the app's (injected) one, and refuses old timestamps only, not future-dated ones. The body is
parsed only after it verified.

Handling (`StripeWebhooks.handle`): what each event does is decided in stripe_effects.py from
Stripe's *current* objects, read back through the API — never from amounts in the event body, with
one exception: localstripe and Stripe have no stable read-back for disputes in our flow, so a
dispute's amount comes from the verified body. The event id is recorded in the same transaction as
its ledger effect, so a replayed event does nothing. Events about top-ups we do not know are
answered 200 and recorded as ignored (logged at error level): a non-2xx would make Stripe retry for
days without any chance of success.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from aichat_gateway import apibody, audittrail
from aichat_gateway.billing import ledger
from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.errors import WebhookRejected
from aichat_gateway.billing.reconcile import balance_writes
from aichat_gateway.billing.schemas import StripeEventBody
from aichat_gateway.billing.stripe_client import StripeClient, webhook_signature_matches
from aichat_gateway.billing.stripe_effects import (
    DisputeState,
    IntentFacts,
    Outcome,
    TopupState,
    cents_to_micro,
    decide_dispute_closed,
    decide_dispute_created,
    decide_intent,
    decide_refund,
)
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)

BalanceHook = Callable[[str, int], Awaitable[None]]

MAX_HEADER_CHARS = 4096
MAX_SIGNATURES = 16
_HEX = frozenset("0123456789abcdef")

PAYMENT_INTENT_EVENTS = frozenset(
    {"payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled"}
)
FAILURE_EVENTS = frozenset({"payment_intent.payment_failed", "payment_intent.canceled"})
DISPUTE_EVENTS = frozenset({"charge.dispute.created", "charge.dispute.closed"})
REFUND_EVENT = "charge.refunded"


# --- verification (pure) ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignatureHeader:
    timestamp: int
    signatures: tuple[str, ...]


def parse_signature_header(header: str | None) -> SignatureHeader:
    """Refuses a missing, oversized or malformed header; ignores schemes other than v1 (v0 is
    Stripe's test-mode scheme and is not an HMAC we could check)."""
    if not header:
        raise WebhookRejected("missing Stripe-Signature header")
    if len(header) > MAX_HEADER_CHARS:
        raise WebhookRejected("Stripe-Signature header too long")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise WebhookRejected("malformed Stripe-Signature header")
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit() or len(value) > 12:
                raise WebhookRejected("malformed Stripe-Signature timestamp")
            timestamp = int(value)
        elif key == "v1":
            if len(value) == 64 and set(value) <= _HEX:
                signatures.append(value)
    if timestamp is None:
        raise WebhookRejected("Stripe-Signature has no timestamp")
    if not signatures:
        raise WebhookRejected("Stripe-Signature has no v1 signature")
    if len(signatures) > MAX_SIGNATURES:
        raise WebhookRejected("Stripe-Signature has too many signatures")
    return SignatureHeader(timestamp, tuple(signatures))


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """The v1 signature Stripe would send for this body at this time: tests sign with it, an
    implementation of Stripe's documented scheme apart from the SDK that verifies."""
    message = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify_signature(payload: bytes, header: str | None, secret: str, *, now: float, tolerance: float) -> int:
    """Check the raw body against the header; the verified timestamp, or WebhookRejected."""
    parsed = parse_signature_header(header)
    if not webhook_signature_matches(payload, parsed.timestamp, parsed.signatures, secret):
        raise WebhookRejected("Stripe-Signature does not match the body")
    if abs(now - parsed.timestamp) > tolerance:
        raise WebhookRejected("Stripe-Signature timestamp is outside the tolerance window")
    return parsed.timestamp


@dataclass(frozen=True, slots=True)
class StripeEvent:
    id: str
    type: str
    object: Mapping[str, Any]


def parse_event(payload: bytes) -> StripeEvent:
    """A verified body → the event's id, type and object (schemas.StripeEventBody); WebhookRejected
    naming what is missing or malformed."""
    body = apibody.parse(StripeEventBody, payload, WebhookRejected)
    return StripeEvent(body.id, body.type, body.data.object)


def _str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if isinstance(value, Mapping):  # an expanded object
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def intent_belongs(row_intent: str | None, topup_id: str, intent_id: str, metadata: Mapping[str, str]) -> bool:
    """Does Stripe's PaymentIntent belong to this top-up row? By the stored id once we have it;
    before that (the create call's answer was lost), only by the top-up id in its metadata."""
    named = metadata.get("topup_id")
    if row_intent is None:
        return named == topup_id
    return row_intent == intent_id and named in (None, topup_id)


# --- handling (I/O shell) ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Facts:
    """Stripe's current view, read before the transaction (no network call while holding locks)."""

    payment_intent_id: str
    intent: IntentFacts
    metadata: Mapping[str, str]
    refunded_cents: int | None = None
    charge_currency: str | None = None


class StripeWebhooks:
    def __init__(self, db: asyncpg.Pool, stripe: StripeClient, on_balance_change: BalanceHook) -> None:
        self._db = db
        self._stripe = stripe
        self._on_balance_change = on_balance_change

    async def handle(self, event: StripeEvent) -> Outcome:
        if await self._db.fetchval("SELECT 1 FROM stripe_events WHERE event_id = $1", event.id):
            return Outcome.DUPLICATE
        if event.type not in PAYMENT_INTENT_EVENTS | DISPUTE_EVENTS | {REFUND_EVENT}:
            return await self._record_only(event, Outcome.UNHANDLED, None)
        topup_id = await self._find_topup(event)
        if topup_id is None:
            log.error("stripe_event_unknown_topup", event_id=event.id, event_type=event.type)
            return await self._record_only(event, Outcome.IGNORED_UNKNOWN_TOPUP, None)
        facts = await self._facts(event)
        effects: list[tuple[str, int]] = []
        async with balance_writes(self._db) as conn:  # Postgres, then Redis, with no reconcile in between
            async with conn.transaction():
                # The top-up row is locked first, before the event row (whose foreign key would take a
                # share lock on it): every event of one top-up queues here, so two of them can never
                # each hold a lock the other wants.
                row = await conn.fetchrow("SELECT * FROM topups WHERE id = $1 FOR UPDATE", topup_id)
                assert row is not None  # found before; rows are never deleted
                fresh = await conn.fetchval(
                    "INSERT INTO stripe_events (event_id, type, outcome, topup_id) VALUES ($1, $2, '', $3) "
                    "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
                    event.id,
                    event.type,
                    topup_id,
                )
                if fresh is None:  # a concurrent delivery of the same event won
                    return Outcome.DUPLICATE
                outcome = await self._apply(conn, event, row, facts, effects)
                await conn.execute("UPDATE stripe_events SET outcome = $2 WHERE event_id = $1", event.id, outcome)
            for user_id, amount in effects:
                await self._on_balance_change(user_id, amount)
        return Outcome(outcome.split("+")[-1])

    async def _record_only(self, event: StripeEvent, outcome: Outcome, topup_id: str | None) -> Outcome:
        inserted = await self._db.fetchval(
            "INSERT INTO stripe_events (event_id, type, outcome, topup_id) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            event.id,
            event.type,
            outcome.value,
            topup_id,
        )
        return outcome if inserted is not None else Outcome.DUPLICATE

    async def _find_topup(self, event: StripeEvent) -> str | None:
        """Our top-up for this event, from ids in the body (only to find the row: every amount and
        status is read back from Stripe, and the PaymentIntent must agree with the row)."""
        obj = event.object
        intent_id = _str(obj, "id") if event.type in PAYMENT_INTENT_EVENTS else _str(obj, "payment_intent")
        if intent_id is None and event.type in DISPUTE_EVENTS and _str(obj, "charge"):
            intent_id = (await self._stripe.retrieve_charge(str(_str(obj, "charge")))).payment_intent
        if intent_id is None:
            return None
        found = await self._db.fetchval("SELECT id FROM topups WHERE payment_intent_id = $1", intent_id)
        if found is None and event.type in PAYMENT_INTENT_EVENTS:
            # The create call's answer was lost: the row has no PaymentIntent id yet, the metadata
            # names it. _apply checks the read-back PaymentIntent names the same top-up and account.
            metadata = obj.get("metadata")
            hint = metadata.get("topup_id") if isinstance(metadata, Mapping) else None
            if isinstance(hint, str):
                found = await self._db.fetchval(
                    "SELECT id FROM topups WHERE id::text = $1 AND payment_intent_id IS NULL", hint
                )
        return str(found) if found is not None else None

    async def _facts(self, event: StripeEvent) -> _Facts:
        obj = event.object
        refunded: int | None = None
        charge_currency: str | None = None
        if event.type in PAYMENT_INTENT_EVENTS:
            intent_id = str(_str(obj, "id"))
        else:
            charge_id = _str(obj, "id") if event.type == REFUND_EVENT else _str(obj, "charge")
            intent_id = _str(obj, "payment_intent") or ""
            if charge_id is not None and (event.type == REFUND_EVENT or not intent_id):
                charge = await self._stripe.retrieve_charge(charge_id)
                refunded, charge_currency = charge.amount_refunded, charge.currency
                intent_id = charge.payment_intent or intent_id
        intent = await self._stripe.retrieve_payment_intent(intent_id)
        return _Facts(
            payment_intent_id=intent.id,
            intent=IntentFacts(intent.status, intent.amount_received, intent.currency),
            metadata=intent.metadata,
            refunded_cents=refunded,
            charge_currency=charge_currency,
        )

    async def _apply(
        self,
        conn: ledger.Conn,
        event: StripeEvent,
        row: asyncpg.Record,
        facts: _Facts,
        effects: list[tuple[str, int]],
    ) -> str:
        topup = TopupState(
            str(row["id"]), str(row["user_id"]), row["status"], row["credited_micro"], row["refunded_micro"]
        )
        if not intent_belongs(row["payment_intent_id"], topup.id, facts.payment_intent_id, facts.metadata):
            log.error("stripe_event_topup_mismatch", event_id=event.id, topup_id=topup.id)
            return Outcome.IGNORED_UNKNOWN_TOPUP.value
        if facts.metadata.get("account_id") != topup.user_id:
            log.error("stripe_event_account_mismatch", event_id=event.id, topup_id=topup.id)
            return Outcome.IGNORED_ACCOUNT_MISMATCH.value

        done: list[str] = []
        intent = decide_intent(topup, facts.intent, failure_event=event.type in FAILURE_EVENTS)
        if intent.outcome is Outcome.IGNORED_CURRENCY:
            log.error("stripe_event_currency", event_id=event.id, topup_id=topup.id, currency=facts.intent.currency)
            return intent.outcome.value
        if intent.credit_micro:
            transfer = await self._post(
                conn, f"topup:{facts.payment_intent_id}", "topup", topup.user_id, intent.credit_micro, event, effects
            )
            await conn.execute(
                "UPDATE topups SET status = 'succeeded', credited_micro = $2, credited_transfer_id = $3, "
                "payment_intent_id = $4, updated_at = now() WHERE id = $1",
                topup.id,
                intent.credit_micro,
                transfer,
                facts.payment_intent_id,
            )
            await audittrail.record(
                conn,
                audittrail.TOPUP_SUCCEEDED,
                subject_id=topup.user_id,
                target_type="topup",
                target_id=topup.id,
                detail={"amount_usd": usd(intent.credit_micro), "payment_intent_id": facts.payment_intent_id},
            )
            topup = TopupState(topup.id, topup.user_id, "succeeded", intent.credit_micro, topup.refunded_micro)
        elif intent.status is not None:
            await conn.execute(
                "UPDATE topups SET status = $2, payment_intent_id = $3, updated_at = now() WHERE id = $1",
                topup.id,
                intent.status,
                facts.payment_intent_id,
            )
            if intent.status == "failed" and row["auto"]:
                # An automatic top-up that failed turns auto-recharge off (autorecharge.py), with why.
                await conn.execute(
                    "UPDATE auto_recharge SET enabled = false, disabled_reason = $2, updated_at = now() "
                    "WHERE user_id = $1",
                    row["user_id"],
                    "Auto-recharge is off: Stripe could not take the last automatic top-up. "
                    "Check your card and turn it on again.",
                )
        if event.type in PAYMENT_INTENT_EVENTS:
            return intent.outcome.value
        if intent.outcome is Outcome.CREDITED:
            done.append(intent.outcome.value)

        if event.type == REFUND_EVENT:
            refund = decide_refund(topup, facts.refunded_cents or 0, facts.charge_currency or "")
            if refund.debit_micro:
                key = f"refund:{facts.payment_intent_id}:{refund.refunded_micro}"
                await self._post(conn, key, "refund", topup.user_id, -refund.debit_micro, event, effects)
                await conn.execute(
                    "UPDATE topups SET refunded_micro = $2, updated_at = now() WHERE id = $1",
                    topup.id,
                    refund.refunded_micro,
                )
            done.append(refund.outcome.value)
        else:
            done.append(await self._apply_dispute(conn, event, topup, effects))
        return "+".join(done)

    async def _apply_dispute(
        self, conn: ledger.Conn, event: StripeEvent, topup: TopupState, effects: list[tuple[str, int]]
    ) -> str:
        obj = event.object
        dispute_id = _str(obj, "id")
        amount = obj.get("amount")
        if dispute_id is None or not isinstance(amount, int) or isinstance(amount, bool):
            log.error("stripe_dispute_malformed", event_id=event.id)
            return Outcome.NO_EFFECT.value
        status, currency = str(obj.get("status") or ""), str(obj.get("currency") or "").lower()
        row = await conn.fetchrow(
            "SELECT status, debited, amount_micro FROM stripe_disputes WHERE dispute_id = $1 FOR UPDATE", dispute_id
        )
        existing = DisputeState(row["status"], row["debited"], row["amount_micro"]) if row else None
        decide = decide_dispute_created if event.type == "charge.dispute.created" else decide_dispute_closed
        decision = decide(existing, cents_to_micro(amount), status, currency)
        if decision.debit_micro > 0:
            await self._post(
                conn, f"dispute:{dispute_id}", "dispute", topup.user_id, -decision.debit_micro, event, effects
            )
        elif decision.debit_micro < 0:
            key = f"dispute_won:{dispute_id}"
            await self._post(conn, key, "dispute_won", topup.user_id, -decision.debit_micro, event, effects)
        if decision.state is not None:
            await conn.execute(
                """INSERT INTO stripe_disputes (dispute_id, topup_id, amount_micro, status, debited)
                   VALUES ($1, $2, $3, $4, $5)
                   ON CONFLICT (dispute_id) DO UPDATE
                   SET status = EXCLUDED.status, debited = EXCLUDED.debited, updated_at = now()""",
                dispute_id,
                topup.id,
                decision.state.amount_micro,
                decision.state.status,
                decision.state.debited,
            )
        return decision.outcome.value

    async def _post(
        self,
        conn: ledger.Conn,
        key: str,
        kind: str,
        user_id: str,
        buyer_delta: int,
        event: StripeEvent,
        effects: list[tuple[str, int]],
    ) -> int:
        """One buyer ↔ Stripe clearing transfer; the hook learns it after the commit."""
        buyer = await ledger.account_id(conn, ledger.AccountKind.BUYER, user_id)
        clearing = await ledger.account_id(conn, ledger.AccountKind.STRIPE_CLEARING)
        transfer = await ledger.post(
            conn,
            idempotency_key=key,
            kind=kind,
            legs=[(clearing, -buyer_delta), (buyer, buyer_delta)],
            memo={"stripe_event": event.id, "stripe_event_type": event.type},
        )
        if transfer is None:
            # Our rows said this was not posted yet, the ledger says it was: nothing is posted twice,
            # but the two disagree and someone should look.
            log.error("stripe_transfer_already_posted", idempotency_key=key, event_id=event.id)
            existing: int = await conn.fetchval("SELECT id FROM transfers WHERE idempotency_key = $1", key)
            return existing
        effects.append((user_id, buyer_delta))
        return transfer
