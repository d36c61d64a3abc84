"""Errors of the billing package; proxy/edge.py maps each class to an HTTP status once.

BillingError
├── InvalidBillingInput  a field is malformed or out of range (message and `param` say which)
│   └── CardDeclined     Stripe declined the buyer's card (its message is for the buyer)
├── InsufficientFunds    the buyer's available balance (or a key's spend cap) cannot cover a request
├── NotAuthenticated     the caller presented no valid session
├── NotPermitted         the caller may not do this (e.g. a buyer calling an admin endpoint)
├── BillingNotFound      no such object *for this caller* (another account's looks absent too)
├── Conflict             the request conflicts with the object's state (e.g. payout above earnings)
├── WebhookRejected      a Stripe webhook failed verification (bad or stale signature, bad body)
├── PaymentsUnavailable  Stripe is not configured or did not answer
└── LedgerError          a transfer would break a ledger rule (legs not summing to zero, ...);
                         a programming error, never the caller's fault
"""

from __future__ import annotations


class BillingError(Exception):
    code = "billing_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidBillingInput(BillingError):
    code = "invalid_request"


class CardDeclined(InvalidBillingInput):
    code = "card_declined"


class InsufficientFunds(BillingError):
    code = "insufficient_quota"


class NotAuthenticated(BillingError):
    code = "authentication_required"


class NotPermitted(BillingError):
    code = "forbidden"


class BillingNotFound(BillingError):
    code = "not_found"


class Conflict(BillingError):
    code = "conflict"


class WebhookRejected(BillingError):
    code = "webhook_rejected"


class PaymentsUnavailable(BillingError):
    code = "payments_unavailable"


class LedgerError(BillingError):
    code = "ledger_error"
