"""The admin console, part two: money. Promotional credits, pending payouts, the ledger audit.

The same functions as the admin API: credits.grant_credit (`POST /api/admin/credits`), the
Payouts decisions (`/api/admin/payouts/...`) and auditruns (`/api/admin/audit-runs`). A credit form
carries an idempotency key made when the form is shown, so sending it twice (a double click, a
reload of the answer) grants once.
"""

from __future__ import annotations

import secrets

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway.accounts.api import client_ip
from aichat_gateway.billing import auditruns
from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.credits import check_credit, grant_credit, user_id_for_email
from aichat_gateway.billing.errors import BillingError, BillingNotFound
from aichat_gateway.billing.payouts import Payouts
from aichat_gateway.billing.schemas import CreditRequest, MarkPaid
from aichat_gateway.dashboard.admin_pages import render_admin
from aichat_gateway.dashboard.forms import Form, read_form, validate
from aichat_gateway.dashboard.pages import admin_user, redirect
from aichat_gateway.dashboard.services import DashboardServices, services
from aichat_gateway.dashboard.templating import PageUser, Templates

CREDIT_FIELDS = ("email", "amount_usd", "reason", "idempotency_key")


def _payouts(svc: DashboardServices) -> Payouts:
    return Payouts.from_settings(svc.db, svc.settings, clock=svc.clock)


def new_credit_form() -> Form:
    return Form(values={"idempotency_key": secrets.token_hex(16)})


class AdminMoneyPages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    # ---- credits ----------------------------------------------------------------------------

    async def credits_page(self, request: Request) -> Response:
        admin = await admin_user(request)
        return self._credits(request, admin, new_credit_form())

    async def grant(self, request: Request) -> Response:
        admin = await admin_user(request)
        form = await read_form(request, CREDIT_FIELDS)
        data: dict[str, object] = {k: form.values[k] for k in ("email", "amount_usd", "reason")}
        body = validate(form, CreditRequest, data)
        if body is None:
            return self._credits(request, admin, form, status_code=400)
        svc = services(request)
        # Every field's problem at once (the API answers the first): the amount and reason rules,
        # then who the address belongs to.
        try:
            check_credit(body.amount_usd, body.reason)
        except BillingError as exc:
            form.refuse(exc.message, exc.param)
        try:
            user_id = await user_id_for_email(svc.db, body.email)
        except BillingError as exc:
            form.refuse(exc.message, exc.param)
        if not form.ok:
            return self._credits(request, admin, form, status_code=400)
        try:
            credit = await grant_credit(
                svc.db,
                user_id=user_id,
                amount_micro=body.amount_usd,
                reason=body.reason,
                granted_by=admin.id,
                idempotency_key=form.values["idempotency_key"] or None,
                on_balance_change=svc.on_balance_change,
                ip=client_ip(request),
            )
        except BillingError as exc:  # a replayed form with other values, or a rule of the ledger
            form.refuse(exc.message, exc.param if exc.param in data else None)
            return self._credits(request, admin, form, status_code=409)
        granted = {
            "email": body.email,
            "amount_usd": usd(credit.amount_micro),
            "balance_usd": usd(credit.balance_micro),
        }
        return self._credits(request, admin, new_credit_form(), granted=granted)

    def _credits(
        self,
        request: Request,
        admin: PageUser,
        form: Form,
        *,
        granted: dict[str, str] | None = None,
        status_code: int = 200,
    ) -> Response:
        context = {"form": form, "granted": granted}
        return render_admin(self.templates, request, "admin/credits.html", admin, context, status_code=status_code)

    # ---- payouts ----------------------------------------------------------------------------

    async def payouts_page(self, request: Request) -> Response:
        admin = await admin_user(request)
        found = await _payouts(services(request)).open_payouts()
        shown = [
            {"payout": o.payout, "seller_email": o.seller_email, "amount_usd": usd(o.payout.amount_micro)}
            for o in found
        ]
        return render_admin(self.templates, request, "admin/payouts.html", admin, {"payouts": shown})

    async def payout_page(self, request: Request) -> Response:
        admin = await admin_user(request)
        return await self._payout(request, admin, Form())

    async def approve(self, request: Request) -> Response:
        admin = await admin_user(request)
        return await self._decide(request, admin, Form(), "approved")

    async def cancel(self, request: Request) -> Response:
        admin = await admin_user(request)
        return await self._decide(request, admin, Form(), "cancelled")

    async def mark_paid(self, request: Request) -> Response:
        admin = await admin_user(request)
        form = await read_form(request, ("reference",))
        if validate(form, MarkPaid) is None:
            return await self._payout(request, admin, form, status_code=400)
        return await self._decide(request, admin, form, "paid")

    async def _decide(self, request: Request, admin: PageUser, form: Form, decision: str) -> Response:
        payouts = _payouts(services(request))
        payout_id = request.path_params["payout_id"]
        try:
            if decision == "approved":
                await payouts.approve(payout_id, admin.id)
            elif decision == "cancelled":
                await payouts.cancel(payout_id, admin.id)
            else:
                await payouts.mark_paid(payout_id, form.values["reference"].strip(), admin.id)
        except BillingNotFound:
            raise HTTPException(404) from None
        except BillingError as exc:  # no longer pending, or nothing to approve: said on the page
            form.refuse(exc.message, "reference" if exc.param == "reference" else None)
            return await self._payout(request, admin, form, status_code=409)
        return redirect(f"/app/admin/payouts/{payout_id}?done={decision}", request)

    async def _payout(self, request: Request, admin: PageUser, form: Form, *, status_code: int = 200) -> Response:
        try:
            found = await _payouts(services(request)).for_admin(request.path_params["payout_id"])
        except BillingNotFound:
            raise HTTPException(404) from None
        payout = found.payout
        context = {
            "payout": payout,
            "amount_usd": usd(payout.amount_micro),
            "seller_email": found.seller_email,
            "form": form,
        }
        return render_admin(self.templates, request, "admin/payout.html", admin, context, status_code=status_code)

    # ---- the ledger audit -------------------------------------------------------------------

    async def audit_page(self, request: Request) -> Response:
        admin = await admin_user(request)
        last = await auditruns.last(services(request).db)
        return render_admin(self.templates, request, "admin/audit.html", admin, {"run": last})

    async def run_audit(self, request: Request) -> Response:
        admin = await admin_user(request)
        await auditruns.run(services(request).db, admin.id)
        return redirect("/app/admin/audit?done=audit", request)

    def routes(self) -> list[Route]:
        return [
            Route("/app/admin/credits", self.credits_page, methods=["GET"]),
            Route("/app/admin/credits", self.grant, methods=["POST"]),
            Route("/app/admin/payouts", self.payouts_page, methods=["GET"]),
            Route("/app/admin/payouts/{payout_id}", self.payout_page, methods=["GET"]),
            Route("/app/admin/payouts/{payout_id}/approve", self.approve, methods=["POST"]),
            Route("/app/admin/payouts/{payout_id}/cancel", self.cancel, methods=["POST"]),
            Route("/app/admin/payouts/{payout_id}/mark-paid", self.mark_paid, methods=["POST"]),
            Route("/app/admin/audit", self.audit_page, methods=["GET"]),
            Route("/app/admin/audit", self.run_audit, methods=["POST"]),
        ]
