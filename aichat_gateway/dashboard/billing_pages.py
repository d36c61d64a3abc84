"""The buyer's billing pages (`/app/billing`): the balance (live), adding funds by card, and the
links to the statement and the usage.

Adding funds is two steps. The amount form creates the top-up with the API's own code (TopUps,
TopupRequest, topup_amount: same limits, same words), then the browser goes to the top-up's page,
where static/js/billing.js mounts Stripe's Card Element and pays (billing/cardpay.py). The balance
is credited only by Stripe's webhook; the page says "processing" until the top-up has landed.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.autorecharge import AutoRechargeRequest, Setting, get_setting, update_setting
from aichat_gateway.billing.balances import Balance, buyer_balance
from aichat_gateway.billing.errors import BillingError, BillingNotFound, PaymentsUnavailable
from aichat_gateway.billing.savedcards import SavedCards, card_json
from aichat_gateway.billing.schemas import TopupRequest
from aichat_gateway.billing.stripe_client import StripeClient
from aichat_gateway.billing.topups import TopupLimits, TopUps, topup_amount, topup_json
from aichat_gateway.config.settings import Settings
from aichat_gateway.dashboard.forms import Form, read_form, validate
from aichat_gateway.dashboard.pages import page_user, redirect
from aichat_gateway.dashboard.services import DashboardServices, services
from aichat_gateway.dashboard.templating import Templates, dollars

# Fixed texts for `?done=` after a redirect (never text from the URL itself).
NOTICES = {
    "card-remove": "The card was removed.",
    "card-default": "That card is now your default.",
    "card-added": "The card was saved.",
    "auto-saved": "Auto-recharge settings saved.",
}


# The auto-recharge form's fields: the API's names, prefixed (the add-funds form has an amount_usd too).
AUTO_FIELDS = {"threshold_usd": "auto_threshold_usd", "amount_usd": "auto_amount_usd"}


def _auto_form(setting: Setting | None) -> Form:
    """The auto-recharge form filled from what is stored (dollars as typed: "10.00")."""
    if setting is None:
        return Form(values={"enabled": "", "auto_threshold_usd": "", "auto_amount_usd": ""})
    return Form(
        values={
            "enabled": "on" if setting.enabled else "",
            "auto_threshold_usd": dollars(usd(setting.threshold_micro)),
            "auto_amount_usd": dollars(usd(setting.amount_micro)),
        }
    )


def balance_context(balance: Balance) -> dict[str, str]:
    """Pure: the balance as the templates show it, and the key the live view compares."""
    return {
        "balance_usd": usd(balance.balance_micro),
        "held_usd": usd(balance.held_micro),
        "available_usd": usd(balance.available_micro),
        "balance_key": f"{balance.balance_micro}.{balance.held_micro}",
    }


def topups_enabled(settings: Settings) -> bool:
    """Card top-ups need Stripe's secret key (server) and publishable key (Stripe.js)."""
    return settings.stripe_secret_key is not None and bool(settings.stripe_publishable_key)


def limits_hint(settings: Settings) -> str:
    limits = TopupLimits.from_settings(settings)
    return f"Between ${dollars(usd(limits.min_micro))} and ${dollars(usd(limits.max_micro))}, in whole cents."


class BillingPages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    async def overview(self, request: Request) -> Response:
        return await self._overview(request, Form())

    async def _overview(
        self, request: Request, form: Form, status_code: int = 200, *, auto_form: Form | None = None
    ) -> Response:
        user = await page_user(request)
        svc = services(request)
        context: dict[str, Any] = balance_context(await buyer_balance(svc, user.id))
        enabled = topups_enabled(svc.settings)
        context |= {
            "form": form,
            "topups_enabled": enabled,
            "limits_hint": limits_hint(svc.settings),
            "notice": NOTICES.get(request.query_params.get("done", "")),
        }
        context |= await self._cards(svc, user.id) if enabled else {"cards": [], "cards_problem": None}
        setting = await get_setting(svc.db, user.id)
        context |= {"auto": setting, "auto_form": auto_form or _auto_form(setting)}
        return self.templates.render(request, "billing/billing.html", context, user=user, status_code=status_code)

    async def auto_recharge(self, request: Request) -> Response:
        user = await page_user(request)
        svc = services(request)
        form = await read_form(request, ("enabled", *AUTO_FIELDS.values()))
        data: dict[str, object] = {"enabled": form.values["enabled"] == "on"}
        data |= {api: form.values[page] for api, page in AUTO_FIELDS.items()}
        checked = Form(values=form.values)  # errors named as the API names them, then as the page does
        body = validate(checked, AutoRechargeRequest, data)
        if body is not None:
            try:
                await update_setting(svc.db, svc.settings, user.id, body)
            except BillingError as exc:
                checked.refuse(exc.message, exc.param)
            else:
                return redirect("/app/billing?done=auto-saved", request)
        form.errors = {AUTO_FIELDS.get(name, name): message for name, message in checked.errors.items()}
        return await self._overview(request, Form(), 400, auto_form=form)

    async def _cards(self, svc: DashboardServices, user_id: str) -> dict[str, Any]:
        try:
            async with StripeClient.open(svc.settings) as stripe:
                cards, default = await SavedCards(svc.db, stripe).listed(user_id)
        except PaymentsUnavailable as exc:
            return {"cards": [], "cards_problem": exc.message}
        return {"cards": [card_json(card, default) for card in cards], "cards_problem": None}

    async def new_card(self, request: Request) -> Response:
        user = await page_user(request)
        svc = services(request)
        if not topups_enabled(svc.settings):
            return redirect("/app/billing", request)
        context = {"publishable_key": svc.settings.stripe_publishable_key, "stripe_js_url": svc.settings.stripe_js_url}
        return self.templates.render(request, "billing/new_card.html", context, user=user)

    async def card_action(self, request: Request) -> Response:
        """Remove a saved card, or make it the default (plain form posts)."""
        user = await page_user(request)
        svc = services(request)
        action = request.path_params["action"]
        card = request.path_params["card_id"]
        if action not in ("remove", "default") or not topups_enabled(svc.settings):
            return redirect("/app/billing", request)
        try:
            async with StripeClient.open(svc.settings) as stripe:
                cards = SavedCards(svc.db, stripe)
                await (cards.remove(user.id, card) if action == "remove" else cards.make_default(user.id, card))
        except BillingError as exc:
            form = Form()
            form.refuse(exc.message)
            return await self._overview(request, form, 400)
        return redirect(f"/app/billing?done=card-{action}", request)

    async def balance(self, request: Request) -> Response:
        """The live balance (htmx polls it): 204 while it is what the page already shows, so the
        live region speaks only when the money changed."""
        user = await page_user(request)
        context = balance_context(await buyer_balance(services(request), user.id))
        if request.query_params.get("seen") == context["balance_key"]:
            return Response(status_code=204)
        return self.templates.render(request, "billing/_balance.html", context, user=user)

    async def create_topup(self, request: Request) -> Response:
        user = await page_user(request)
        svc = services(request)
        form = await read_form(request, ("amount_usd",))
        if not topups_enabled(svc.settings):
            form.refuse("Card top-ups are off on this gateway.")
            return await self._overview(request, form, 400)
        body = validate(form, TopupRequest)
        if body is not None:
            try:
                amount = topup_amount(body.amount_usd, TopupLimits.from_settings(svc.settings))
                async with StripeClient.open(svc.settings) as stripe:
                    created = await TopUps(svc.db, stripe).create(user.id, amount)
            except BillingError as exc:
                form.refuse(exc.message, exc.param)
            else:
                return redirect(f"/app/billing/topups/{created.id}", request)
        return await self._overview(request, form, 400)

    async def topup(self, request: Request) -> Response:
        """A top-up's page: the Card Element while it waits for a card, its outcome after."""
        user = await page_user(request)
        svc = services(request)
        try:
            found = await topup_json(svc.db, user.id, request.path_params["topup_id"])
        except BillingNotFound:
            return self.templates.render(request, "errors/error.html", _not_found(), user=user, status_code=404)
        context: dict[str, Any] = balance_context(await buyer_balance(svc, user.id))
        context |= {"topup": found, "client_secret": None, "problem": None, "cards": []}
        enabled = topups_enabled(svc.settings)
        context |= {
            "publishable_key": svc.settings.stripe_publishable_key,
            "stripe_js_url": svc.settings.stripe_js_url if enabled else None,
        }
        if found["status"] == "pending" and enabled and found["payment_intent_id"]:
            try:
                async with StripeClient.open(svc.settings) as stripe:
                    intent = await stripe.retrieve_payment_intent(found["payment_intent_id"])
                context["client_secret"] = intent.client_secret
                context |= await self._cards(svc, user.id)
            except BillingError as exc:
                context["problem"] = exc.message
        return self.templates.render(request, "billing/topup.html", context, user=user)

    def routes(self) -> list[Route]:
        return [
            Route("/app/billing", self.overview, methods=["GET"]),
            Route("/app/billing/balance", self.balance, methods=["GET"]),
            Route("/app/billing/topups", self.create_topup, methods=["POST"]),
            Route("/app/billing/topups/{topup_id}", self.topup, methods=["GET"]),
            Route("/app/billing/cards/new", self.new_card, methods=["GET"]),
            Route("/app/billing/auto-recharge", self.auto_recharge, methods=["POST"]),
            Route("/app/billing/cards/{card_id}/{action}", self.card_action, methods=["POST"]),
        ]


def _not_found() -> dict[str, Any]:
    return {"status": 404, "title": "Not found", "text": "There is no such top-up.", "signed_in": True}
