"""What a Stripe fact does to a top-up: pure decisions over plain data, unit-tested without I/O.

The webhook shell (webhooks.py) gathers the facts — the top-up row, Stripe's current view of the
PaymentIntent and charge, a dispute's stored state — and applies what these functions decide, in
one transaction with the event's record.

Ordering. Stripe sends events in no guaranteed order and retries them for days, so no decision
trusts the order or the event body's amounts:
- Every event about a top-up first syncs it with Stripe's *current* PaymentIntent: if Stripe says it
  succeeded and we have not credited it, it is credited now (once per PaymentIntent, with the
  amount Stripe received). So a refund or dispute that arrives before `payment_intent.succeeded`
  never leaves the buyer debited for money not yet credited, and the late `succeeded` does nothing.
- `payment_intent.payment_failed` marks a top-up failed only while Stripe's PaymentIntent is not
  succeeded: a stale failure after a success (a retried card) changes nothing.
- Refunds are applied by Stripe's cumulative `amount_refunded`: each event debits what is new
  beyond what was debited before, so replays, duplicates and reordered partial refunds debit the
  total exactly once.
- Disputes keep a state (open/won/lost, debited or not), so "closed as won" before "created" moves
  no money and the late "created" moves none either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MICRO_PER_CENT = 10_000
CURRENCY = "usd"


class Outcome(StrEnum):
    """What an event did; stored in stripe_events.outcome and returned to Stripe."""

    CREDITED = "credited"
    ALREADY_CREDITED = "already_credited"
    FAILED = "failed"
    REFUNDED = "refunded"
    DISPUTED = "disputed"
    DISPUTE_WON = "dispute_won"
    NO_EFFECT = "no_effect"
    DUPLICATE = "duplicate"
    UNHANDLED = "unhandled"
    IGNORED_UNKNOWN_TOPUP = "ignored_unknown_topup"
    IGNORED_ACCOUNT_MISMATCH = "ignored_account_mismatch"
    IGNORED_CURRENCY = "ignored_currency"


def cents_to_micro(cents: int) -> int:
    return cents * MICRO_PER_CENT


@dataclass(frozen=True, slots=True)
class TopupState:
    id: str
    user_id: str
    status: str  # creating | pending | succeeded | failed
    credited_micro: int
    refunded_micro: int


@dataclass(frozen=True, slots=True)
class IntentFacts:
    """Stripe's current view of the top-up's PaymentIntent."""

    status: str
    received_cents: int
    currency: str


@dataclass(frozen=True, slots=True)
class IntentDecision:
    outcome: Outcome
    status: str | None = None  # the top-up's new status, if it changes
    credit_micro: int = 0  # buyer +, clearing -


def decide_intent(topup: TopupState, intent: IntentFacts, *, failure_event: bool) -> IntentDecision:
    """Sync a top-up with its PaymentIntent. `failure_event`: the event being handled is
    payment_intent.payment_failed (only that event may mark a top-up failed)."""
    if intent.currency != CURRENCY:
        return IntentDecision(Outcome.IGNORED_CURRENCY)
    if intent.status == "succeeded":
        if topup.status == "succeeded":
            return IntentDecision(Outcome.ALREADY_CREDITED)
        received = cents_to_micro(intent.received_cents)
        if received <= 0:
            return IntentDecision(Outcome.NO_EFFECT)
        return IntentDecision(Outcome.CREDITED, status="succeeded", credit_micro=received)
    if failure_event and topup.status in ("creating", "pending"):
        return IntentDecision(Outcome.FAILED, status="failed")
    return IntentDecision(Outcome.NO_EFFECT)


@dataclass(frozen=True, slots=True)
class RefundDecision:
    outcome: Outcome
    debit_micro: int = 0  # buyer -, clearing +
    refunded_micro: int = 0  # the top-up's new cumulative refunded amount


def decide_refund(topup: TopupState, amount_refunded_cents: int, currency: str) -> RefundDecision:
    """Debit what Stripe has refunded beyond what we already debited. The buyer may go below
    zero (the money has left through Stripe; a negative balance blocks spending until repaid)."""
    if currency != CURRENCY:
        return RefundDecision(Outcome.IGNORED_CURRENCY)
    total = cents_to_micro(amount_refunded_cents)
    new = total - topup.refunded_micro
    if new <= 0:
        return RefundDecision(Outcome.NO_EFFECT, refunded_micro=topup.refunded_micro)
    return RefundDecision(Outcome.REFUNDED, debit_micro=new, refunded_micro=total)


@dataclass(frozen=True, slots=True)
class DisputeState:
    status: str  # open | won | lost
    debited: bool
    amount_micro: int


@dataclass(frozen=True, slots=True)
class DisputeDecision:
    outcome: Outcome
    state: DisputeState | None = None  # the dispute's new stored state, if it changes
    debit_micro: int = 0  # buyer -, clearing + (positive) or the reverse (negative: won back)


# An inquiry ("warning_*") withdraws no funds; a chargeback does.
def _withdraws_funds(stripe_status: str) -> bool:
    return not stripe_status.startswith("warning_")


def decide_dispute_created(
    existing: DisputeState | None, amount_micro: int, stripe_status: str, currency: str
) -> DisputeDecision:
    if currency != CURRENCY:
        return DisputeDecision(Outcome.IGNORED_CURRENCY)
    if existing is not None or amount_micro <= 0:
        return DisputeDecision(Outcome.NO_EFFECT)  # a replay, or "closed" came first
    if not _withdraws_funds(stripe_status):
        return DisputeDecision(Outcome.NO_EFFECT, state=DisputeState("open", False, amount_micro))
    return DisputeDecision(Outcome.DISPUTED, state=DisputeState("open", True, amount_micro), debit_micro=amount_micro)


def decide_dispute_closed(
    existing: DisputeState | None, amount_micro: int, stripe_status: str, currency: str
) -> DisputeDecision:
    """`won` (or an inquiry closed without a chargeback) gives back what was debited; `lost`
    keeps it debited, debiting now if the "created" event has not come yet."""
    if currency != CURRENCY:
        return DisputeDecision(Outcome.IGNORED_CURRENCY)
    won = stripe_status in ("won", "warning_closed")
    if existing is not None and existing.status != "open":
        return DisputeDecision(Outcome.NO_EFFECT)  # already closed: a replay
    if won:
        if existing is not None and existing.debited:
            state = DisputeState("won", False, existing.amount_micro)
            return DisputeDecision(Outcome.DISPUTE_WON, state=state, debit_micro=-existing.amount_micro)
        amount = existing.amount_micro if existing is not None else amount_micro
        return DisputeDecision(Outcome.NO_EFFECT, state=DisputeState("won", False, amount))
    if stripe_status != "lost":
        return DisputeDecision(Outcome.NO_EFFECT)  # not a final status we know
    if existing is not None and existing.debited:
        return DisputeDecision(Outcome.NO_EFFECT, state=DisputeState("lost", True, existing.amount_micro))
    amount = existing.amount_micro if existing is not None else amount_micro
    if amount <= 0:
        return DisputeDecision(Outcome.NO_EFFECT)
    return DisputeDecision(Outcome.DISPUTED, state=DisputeState("lost", True, amount), debit_micro=amount)
