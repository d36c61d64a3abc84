"""The seller's money: earnings by day and by listing with a chart (`/app/seller/earnings`), and
payouts (`/app/seller/payouts`): request one, the history, and how payouts reach the seller.

The figures are billing's own (earnings.seller_earnings, the Payouts service), read by the JSON API
too, so a payout request here obeys the same minimum, holding period and approval amount, in the
same words, and is recorded in the audit trail in the payout's own transaction.

Payouts reach a seller by Stripe Connect (a transfer to the seller's connected account, when the
gateway has a Stripe key) or by hand (an admin pays and marks the payout paid with a reference).
With Stripe, "Set up payouts with Stripe" sends the seller to Stripe's onboarding (billing/connect.py:
their Express account, made and stored on first use, and a fresh account link); Stripe sends them
back to this page (`?connect=returned`), or to `/app/seller/payouts/connect` for a new link when
one expired. The id of a Connect account the seller already has can still be entered by hand.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aichat_gateway.accounts.api import client_ip
from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.connect import onboarding_link
from aichat_gateway.billing.earnings import DayEarning, seller_earnings
from aichat_gateway.billing.errors import BillingError, PaymentsUnavailable
from aichat_gateway.billing.payouts import Payouts
from aichat_gateway.billing.schemas import PayoutAccountRequest, PayoutRequest
from aichat_gateway.billing.seller_api import earnings_window
from aichat_gateway.config.logging import get_logger
from aichat_gateway.dashboard.forms import Form, read_form, validate
from aichat_gateway.dashboard.pages import page_user, redirect
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import PageUser, Templates

log = get_logger(__name__)

HISTORY: Final = 50
# Stripe's own error text stays in the log: the seller can do nothing with it.
CONNECT_FAILED: Final = (
    "Stripe could not start the onboarding just now. Try again in a minute, or enter the id of a Stripe account "
    "you already have below."
)
NOTICES: Final = {
    "requested": "Payout requested.",
    "account": "Stripe account saved: payouts are sent to it.",
}
# Where Stripe's onboarding sends the seller back (billing/connect.py RETURN_PATH).
CONNECT_NOTICES: Final = {
    "returned": "Stripe onboarding submitted. Stripe checks the details; payouts are sent to your connected "
    "account once it can receive transfers.",
}


def chart_points(days: tuple[DayEarning, ...]) -> list[dict[str, Any]]:
    """Pure: the by-day rows as the table (and the chart, which reads the table) shows them."""
    return [{"date": d.day.isoformat(), "earned_usd": usd(d.earned_micro), "requests": d.requests} for d in days]


def payout_rules(min_usd: Decimal, hold_days: int, approval_usd: Decimal) -> list[str]:
    """Pure: the rules a payout request is held to, in words."""
    hold = (
        f"Earnings from the last {hold_days} day{'s' if hold_days != 1 else ''} are held before they can be paid out."
        if hold_days > 0
        else "Earnings can be paid out as soon as they are settled."
    )
    return [
        f"The smallest payout is ${min_usd:.2f}; amounts are whole cents.",
        hold,
        f"A payout above ${approval_usd:.2f} waits for an administrator's approval.",
    ]


class SellerMoneyPages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    def _payouts(self, request: Request) -> Payouts:
        svc = services(request)
        return Payouts.from_settings(svc.db, svc.settings, clock=svc.clock)

    async def earnings(self, request: Request) -> Response:
        user = await page_user(request)
        payouts = self._payouts(request)
        since, until = earnings_window(None, None, payouts.now())
        report = await seller_earnings(services(request).db, payouts, user.id, since, until)
        context = {
            "report": report,
            "usd": usd,
            "days": chart_points(report.by_day),
            "since": since.date(),
            "until": until.date(),
            "since_epoch": int(since.timestamp()),
            "until_epoch": int(until.timestamp()),
            "tab": "earnings",
        }
        return self.templates.render(request, "seller/earnings.html", context, user=user)

    async def payouts_page(self, request: Request) -> Response:
        user = await page_user(request)
        notice = NOTICES.get(request.query_params.get("done", "")) or CONNECT_NOTICES.get(
            request.query_params.get("connect", "")
        )
        return await self._payouts_view(request, user, Form(), Form(), notice=notice)

    async def _payouts_view(
        self,
        request: Request,
        user: PageUser,
        form: Form,
        account_form: Form,
        *,
        connect_form: Form | None = None,
        status_code: int = 200,
        notice: str | None = None,
    ) -> Response:
        svc = services(request)
        payouts = self._payouts(request)
        now = payouts.now()
        report = await seller_earnings(svc.db, payouts, user.id, *earnings_window(None, None, now))
        history = await payouts.page(user.id, HISTORY, None)
        account = await payouts.account(user.id)
        settings = svc.settings
        context = {
            "report": report,
            "usd": usd,
            "history": history,
            "form": form,
            "account_form": account_form,
            "connect_form": connect_form or Form(),
            "account": account["stripe_account_id"] if account else None,
            "stripe": settings.stripe_secret_key is not None,
            "rules": payout_rules(settings.payout_min_usd, settings.earnings_hold_days, settings.payout_approval_usd),
            "notice": notice,
            "tab": "payouts",
        }
        return self.templates.render(request, "seller/payouts.html", context, user=user, status_code=status_code)

    async def request_payout(self, request: Request) -> Response:
        user = await page_user(request)
        form = await read_form(request, ("amount_usd",))
        typed = form.values["amount_usd"].strip()
        body = validate(form, PayoutRequest, {"amount_usd": typed} if typed else {})
        if body is not None:
            try:
                await self._payouts(request).request(user.id, body.amount_usd, actor_id=user.id, ip=client_ip(request))
            except BillingError as exc:
                form.refuse(exc.message, exc.param)
        if not form.ok:
            return await self._payouts_view(request, user, form, Form(), status_code=400)
        return redirect("/app/seller/payouts?done=requested", request)

    async def set_account(self, request: Request) -> Response:
        user = await page_user(request)
        form = await read_form(request, ("stripe_account_id",))
        body = validate(form, PayoutAccountRequest, {"stripe_account_id": form.values["stripe_account_id"].strip()})
        if body is None:
            return await self._payouts_view(request, user, Form(), form, status_code=400)
        await self._payouts(request).set_account(user.id, body.stripe_account_id, ip=client_ip(request))
        return redirect("/app/seller/payouts?done=account", request)

    async def connect(self, request: Request) -> Response:
        """To Stripe's onboarding: the button's POST, and the GET of Stripe's refresh_url (a new link
        for one that expired)."""
        user = await page_user(request)
        if request.method == "GET" and await self._payouts(request).account(user.id) is None:
            # Only Stripe's refresh of an account that exists: a GET (a link from anywhere) never creates one.
            return redirect("/app/seller/payouts", request)
        origin = f"{request.url.scheme}://{request.url.netloc}"
        try:
            link = await onboarding_link(services(request), user.id, user.email, origin, ip=client_ip(request))
        except PaymentsUnavailable as exc:
            log.warning("connect_onboarding_failed", seller_id=user.id, error=exc.message)
            failed = Form()
            failed.refuse(CONNECT_FAILED)
            return await self._payouts_view(request, user, Form(), Form(), connect_form=failed, status_code=503)
        except BillingError as exc:
            # The stored account is not one Stripe lets this gateway onboard: said next to the field
            # where another id can be entered.
            refused = Form(values={"stripe_account_id": ""})
            refused.refuse(exc.message, exc.param)
            return await self._payouts_view(request, user, Form(), refused, status_code=409)
        return redirect(link.url, request)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/app/seller/earnings", self.earnings, methods=["GET"]),
            Route("/app/seller/payouts", self.payouts_page, methods=["GET"]),
            Route("/app/seller/payouts", self.request_payout, methods=["POST"]),
            Route("/app/seller/payout-account", self.set_account, methods=["POST"]),
            Route("/app/seller/payouts/connect", self.connect, methods=["GET", "POST"]),
        ]
