"""Payout decisions, pure: the rules of request fields, amounts, the holding period, approval, replays, keys.

`payouts.py` does the I/O around these (Postgres, Stripe); everything decided from plain values
is here, so it is unit-tested without a database. Money is integer micro-USD; a payout is whole
cents (Stripe's unit).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

from aichat_gateway.billing.amounts import parse_usd, usd
from aichat_gateway.billing.credits import IDEMPOTENCY_PARAM
from aichat_gateway.billing.errors import Conflict, InvalidBillingInput
from aichat_gateway.billing.stripe_effects import MICRO_PER_CENT

STATUSES: Final = ("pending", "paid", "failed", "cancelled")
MAX_REFERENCE_CHARS: Final = 200
# `requested_micro` of a request for everything available (an explicit amount is always > 0).
EVERYTHING: Final = 0
STRIPE_ACCOUNT: Final = r"acct_[A-Za-z0-9]{6,64}"
_STRIPE_ACCOUNT = re.compile(STRIPE_ACCOUNT)


def min_payout_micro(setting: Decimal) -> int:
    return parse_usd(format(setting, "f"), "GATEWAY_PAYOUT_MIN_USD")


def approval_micro(setting: Decimal) -> int:
    return parse_usd(format(setting, "f"), "GATEWAY_PAYOUT_APPROVAL_USD")


def payout_amount(micro: int) -> int:
    """The rule for an explicit payout amount (schemas.PayoutRequest): more than zero, whole cents."""
    if micro <= 0:
        raise ValueError("amount_usd must be more than zero")
    if micro % MICRO_PER_CENT:
        raise ValueError("amount_usd must be whole cents")
    return micro


def decide_amount(
    requested_micro: int | None, available_micro: int, minimum_micro: int, *, holding_micro: int = 0
) -> int:
    """What a payout request takes from the seller's earnings, or why not.

    400 (InvalidBillingInput) when the request itself is wrong whatever the balance: an explicit
    amount below the minimum. 409 (Conflict) when the balance is what says no: more than
    available, or "everything" when everything is below the minimum (also what the loser of two
    concurrent "everything" requests gets). `holding_micro` (earnings still in the holding
    period) is only named in the refusal, so the seller knows more is on its way.
    """
    held = f"; {usd(holding_micro)} USD more is in the holding period" if holding_micro > 0 else ""
    if requested_micro is not None:
        if requested_micro < minimum_micro:
            raise InvalidBillingInput(f"the smallest payout is {usd(minimum_micro)} USD", param="amount_usd")
        if requested_micro > available_micro:
            raise Conflict(f"only {usd(max(available_micro, 0))} USD is available for payout{held}", param="amount_usd")
        return requested_micro
    everything = max(available_micro, 0) // MICRO_PER_CENT * MICRO_PER_CENT
    if everything < minimum_micro:
        raise Conflict(
            f"{usd(everything)} USD is available, below the smallest payout of {usd(minimum_micro)} USD{held}",
            param="amount_usd",
        )
    return everything


@dataclass(frozen=True, slots=True)
class Payable:
    """A seller's earnings balance split by the holding period."""

    holding_micro: int  # earned in the holding period: not payable yet
    available_micro: int  # what a payout may take now
    next_release: datetime | None  # when the oldest held earnings leave the holding period


def hold_start(now: datetime, hold_days: int) -> datetime | None:
    """Earnings from requests made after this are held; None: no holding period."""
    return now - timedelta(days=hold_days) if hold_days > 0 else None


def split_earnings(balance_micro: int, held_micro: int, oldest_held: datetime | None, hold_days: int) -> Payable:
    """The balance minus what was earned within the holding period, never below zero.

    Holding is capped by the balance: earnings already paid out (possible when the period was
    lengthened since) cannot be held twice, so holding + available is always the balance.
    """
    holding = max(0, min(held_micro, balance_micro))
    release = oldest_held + timedelta(days=hold_days) if holding > 0 and oldest_held is not None else None
    return Payable(holding, balance_micro - holding, release)


def needs_approval(amount_micro: int, threshold_micro: int) -> bool:
    return amount_micro > threshold_micro


def check_approvable(status: str, approval_required: bool, approved_at: datetime | None) -> None:
    check_pending(status, "approved")
    if not approval_required:
        raise Conflict("this payout needs no approval (it is not above GATEWAY_PAYOUT_APPROVAL_USD)")
    if approved_at is not None:
        raise Conflict("this payout is approved already")


def requested_value(requested_micro: int | None) -> int:
    """What `requested_micro` stores for a request: its amount, or EVERYTHING."""
    return EVERYTHING if requested_micro is None else requested_micro


def check_replay(stored_request: int | None, asked_micro: int | None) -> None:
    """A retry repeats its request; the same key with another amount is a mistake that must not
    look like a success (nothing new would be paid, yet the answer would show the first amount).
    `stored_request` None: a payout from before requests were recorded, replayed as it always was."""
    if stored_request is not None and stored_request != requested_value(asked_micro):
        raise Conflict(
            f"this {IDEMPOTENCY_PARAM} was used for another payout request; use a new key for a new payout",
            param=IDEMPOTENCY_PARAM,
        )


def stripe_account(value: str) -> str:
    """The rule for a seller's Stripe Connect account id (schemas.PayoutAccountRequest)."""
    if not _STRIPE_ACCOUNT.fullmatch(value):
        raise ValueError("stripe_account_id must be a Stripe Connect account id (acct_ followed by letters and digits)")
    return value


def payment_reference(value: str) -> str:
    """An admin's mark-paid reference (schemas.MarkPaid): trimmed, 1 to MAX_REFERENCE_CHARS printable."""
    text = value.strip()
    if not text or len(text) > MAX_REFERENCE_CHARS or any(ord(c) < 32 for c in text):
        raise ValueError(f"reference is required: 1 to {MAX_REFERENCE_CHARS} printable characters naming the payment")
    return text


def check_pending(status: str, action: str) -> None:
    if status != "pending":
        raise Conflict(f"a {status} payout cannot be {action}; only a pending one can")


def iso_week(moment: datetime) -> str:
    """'2024-W05': the ISO week (UTC) a scheduled run belongs to."""
    year, week, _ = moment.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def run_key(seller_id: str, week: str) -> str:
    return f"payout-run:{seller_id}:{week}"


def transfer_key(payout_id: str) -> str:
    return f"payout:{payout_id}"


def reversal_key(payout_id: str) -> str:
    return f"payout-reversal:{payout_id}"


def cents(amount_micro: int) -> int:
    """Stripe's amount; payouts are whole cents, so nothing is lost (floor, should one not be)."""
    return amount_micro // MICRO_PER_CENT
