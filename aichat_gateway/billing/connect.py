"""Stripe Connect onboarding: a seller's Express account and the account link that onboards it.

The account is the one payouts go to (`seller_payout_accounts`, the store PUT
/api/seller/payout-account writes), so a seller has at most one: a stored id is reused, and the
account is created under an Idempotency-Key per seller, so two clicks at once make one account at
Stripe (both get its id and store the same row). The link is made fresh every time: Stripe's links
are single-use and expire within minutes, so one is never stored or reused.

Where the seller lands: `return_url` (the payouts page, which says onboarding was submitted) when
they finish or leave; `refresh_url` (a route that makes a new link and redirects) when the link
expired or was used already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from aichat_gateway.billing.errors import PaymentsUnavailable
from aichat_gateway.billing.payoutplan import stripe_account
from aichat_gateway.billing.payouts import Payouts
from aichat_gateway.billing.services import BillingServices
from aichat_gateway.billing.stripe_client import StripeClient

RETURN_PATH: Final = "/app/seller/payouts?connect=returned"
REFRESH_PATH: Final = "/app/seller/payouts/connect"


@dataclass(frozen=True, slots=True)
class OnboardingLink:
    url: str
    stripe_account_id: str
    created: bool  # a new Express account was made (and stored) for this link


def account_idempotency_key(seller_id: str) -> str:
    """Pure: one Express account per seller, however many requests race to make it."""
    return f"connect-account:{seller_id}"


def onboarding_urls(base_url: str) -> tuple[str, str]:
    """Pure: (refresh_url, return_url) on the gateway the seller is using."""
    base = base_url.rstrip("/")
    return base + REFRESH_PATH, base + RETURN_PATH


async def onboarding_link(
    svc: BillingServices, seller_id: str, email: str | None, base_url: str, *, ip: str | None = None
) -> OnboardingLink:
    """A fresh onboarding link for the seller's Connect account, made (and stored) first if they have none
    (with the seller's email, looked up when the caller does not have it, for Stripe to prefill).

    Raises PaymentsUnavailable without STRIPE_SECRET_KEY or when Stripe does not answer as it should.
    """
    if svc.settings.stripe_secret_key is None:
        raise PaymentsUnavailable("payments are not configured (STRIPE_SECRET_KEY is unset)")
    payouts = Payouts.from_settings(svc.db, svc.settings, clock=svc.clock)
    stored = await payouts.account(seller_id)
    refresh_url, return_url = onboarding_urls(base_url)
    async with StripeClient.open(svc.settings) as stripe:
        created = stored is None
        if stored is None:
            if email is None:
                email = await svc.db.fetchval("SELECT email FROM users WHERE id = $1::uuid", seller_id)
            made = await stripe.create_connect_account(
                email=email,
                metadata={"account_id": seller_id},
                idempotency_key=account_idempotency_key(seller_id),
            )
            try:
                account = stripe_account(made)
            except ValueError:
                raise PaymentsUnavailable("Stripe answered an account id of an unexpected shape") from None
            await payouts.set_account(seller_id, account, ip=ip, how="onboarding")
        else:
            account = str(stored["stripe_account_id"])
        url = await stripe.create_account_link(account_id=account, refresh_url=refresh_url, return_url=return_url)
    return OnboardingLink(url=url, stripe_account_id=account, created=created)
