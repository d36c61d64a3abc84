"""Billing's API bodies and answers as pydantic models (aichat_gateway/apibody.py reads them).

Amounts are decimal USD strings read into integer micro-USD (config/money.py's grammar through
`apibody.UsdAmount`); the rules of each field are payoutplan.py's (payout amounts, Stripe account
ids, payment references). What needs the settings or the database stays with the handlers: a
top-up's limits (`topups.topup_amount`), a credit's bounds and reason (`credits.check_credit`, which
the CLI shares), the buyer's e-mail (`credits.user_id_for_email`, the one e-mail rule).

Stripe's webhook events are Stripe's shape, read open (fields beyond id, type and data.object are
kept and ignored) and only after their signature verified (webhooks.py).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from aichat_gateway.apibody import Answer, Body, Usd, UsdAmount
from aichat_gateway.billing.credits import MAX_REASON_CHARS
from aichat_gateway.billing.payoutplan import (
    MAX_REFERENCE_CHARS,
    STRIPE_ACCOUNT,
    payment_reference,
    payout_amount,
    stripe_account,
)
from aichat_gateway.emailaddr import MAX_EMAIL_CHARS

# ---- bodies ------------------------------------------------------------------------------------


class TopupRequest(Body):
    amount_usd: UsdAmount


class CreditRequest(Body):
    email: Annotated[str, WithJsonSchema({"type": "string", "format": "email", "maxLength": MAX_EMAIL_CHARS})]
    amount_usd: UsdAmount
    reason: Annotated[str, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_REASON_CHARS})]


class PayoutRequest(Body):
    """A payout of this amount; null or left out (an empty body too): everything available."""

    amount_usd: Annotated[UsdAmount, AfterValidator(payout_amount)] | None = None


class PayoutAccountRequest(Body):
    stripe_account_id: Annotated[
        str, AfterValidator(stripe_account), WithJsonSchema({"type": "string", "pattern": f"^{STRIPE_ACCOUNT}$"})
    ]


class MarkPaid(Body):
    reference: Annotated[
        str,
        AfterValidator(payment_reference),
        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_REFERENCE_CHARS}),
    ]


_TEXT_ID = Annotated[str, Field(min_length=1, max_length=255)]


class StripeEventData(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    object: dict[str, Any]


class StripeEventBody(BaseModel):
    """The fields of a Stripe event the gateway reads; every other field is Stripe's and ignored."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    id: _TEXT_ID
    type: _TEXT_ID
    data: StripeEventData


# ---- answers -----------------------------------------------------------------------------------


class Balance(Answer):
    balance_usd: Usd
    held_usd: Usd
    available_usd: Usd


class Transaction(Answer):
    id: str
    type: str
    amount_usd: Usd
    balance_after_usd: Usd
    created_at: datetime
    description: str


class TransactionPage(Answer):
    data: list[Transaction]
    next_cursor: str | None


class UsageRecord(Answer):
    request_id: str
    key_id: uuid.UUID | None
    key_name: str | None
    model: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    cost_usd: Usd
    outcome: str
    status: int
    stream: bool
    created_at: datetime


class UsagePage(Answer):
    data: list[UsageRecord]
    next_cursor: str | None


class CreatedTopup(Answer):
    id: uuid.UUID
    payment_intent_id: str
    client_secret: str | None
    amount_usd: Usd
    status: str


class Topup(Answer):
    id: uuid.UUID
    payment_intent_id: str | None
    amount_usd: Usd
    credited_usd: Usd
    refunded_usd: Usd
    status: Literal["creating", "pending", "succeeded", "failed"]
    created_at: datetime


class WebhookReceipt(Answer):
    received: Literal[True]
    outcome: str


class Credit(Answer):
    id: str
    user_id: uuid.UUID
    amount_usd: Usd
    balance_usd: Usd
    replayed: bool


class ListingEarnings(Answer):
    listing_id: uuid.UUID | None
    public_id: str | None
    name: str | None
    earned_usd: Usd
    requests: int = Field(ge=0)


class DayEarnings(Answer):
    date: date
    earned_usd: Usd
    requests: int = Field(ge=0)


class Earnings(Answer):
    earned_usd: Usd
    paid_out_usd: Usd
    pending_usd: Usd
    holding_usd: Usd = Field(description="Earned within the holding period: not payable yet")
    next_payable_at: datetime | None
    available_usd: Usd
    since: datetime
    until: datetime
    by_listing: list[ListingEarnings]
    by_day: list[DayEarnings]


class PayoutAccount(Answer):
    stripe_account_id: str | None
    updated_at: datetime | None


class OnboardingLink(Answer):
    url: str
    stripe_account_id: str


class Payout(Answer):
    id: uuid.UUID
    amount_usd: Usd
    status: Literal["pending", "paid", "failed", "cancelled"]
    method: Literal["stripe", "manual"]
    destination: str | None
    stripe_transfer_id: str | None
    reference: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None
    approval_required: bool
    awaiting_approval: bool
    approved_at: datetime | None


class PayoutPage(Answer):
    data: list[Payout]
    next_cursor: str | None


class OpenPayout(Payout):
    seller_email: str | None


class OpenPayoutList(Answer):
    data: list[OpenPayout]


class AuditRun(Answer):
    id: str
    ran_at: datetime
    ok: bool
    findings: list[str] = Field(description="Each broken invariant and the rows that break it; [] when ok")
    accounts: int
    transfers: int
    ran_by_email: str | None = Field(description="The admin who ran it; null for `aichat-gateway audit`")


class LastAuditRun(Answer):
    run: AuditRun | None
