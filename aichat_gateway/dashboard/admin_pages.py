"""The admin console (`/app/admin`), part one: accounts and listings.

Tabs: Users (search, then one account: role, disable/enable), Listings (all of them, then one:
disable with a reason the seller sees, enable); money is in admin_money.py. Every page starts with
`admin_user` (the 403 page for anyone else) and calls the functions the admin API calls
(accounts/useradmin.py, marketplace/moderation.py), so both refuse the same things in the same words.
Destructive actions are a second step: the list links to the object's page, which holds the button.
After a change the browser is sent back to the object's page with a fixed notice (`?done=`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway.accounts import useradmin, users
from aichat_gateway.accounts.api import client_ip
from aichat_gateway.accounts.errors import InvalidInput, NotFound
from aichat_gateway.accounts.schemas import AdminUserPatch
from aichat_gateway.dashboard.forms import Form, read_form, validate
from aichat_gateway.dashboard.pages import admin_user, redirect
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import PageUser, Templates
from aichat_gateway.marketplace import listings, moderation
from aichat_gateway.marketplace.errors import InvalidListing, ListingNotFound

# The console's sections, in the order of its tabs.
TABS: Final = (
    ("/app/admin", "Users"),
    ("/app/admin/listings", "Listings"),
    ("/app/admin/credits", "Credits"),
    ("/app/admin/payouts", "Payouts"),
    ("/app/admin/audit", "Ledger audit"),
)
# What `?done=` may say: fixed texts, so nothing from the address ends up in the page.
NOTICES: Final = {
    "role": "Role changed.",
    "disabled": "Account disabled: its sessions ended and its API keys no longer work.",
    "enabled": "Account enabled: it can log in again and its API keys work again.",
    "listing-disabled": "Listing disabled. Its seller sees the reason; it no longer gets requests.",
    "listing-enabled": "Listing enabled: it is back in routing.",
    "approved": "Payout approved: the next payout run sends it.",
    "paid": "Payout marked paid.",
    "cancelled": "Payout cancelled: the amount is back in the seller's earnings.",
    "audit": "Audit finished.",
}


def tabs(current: str) -> list[dict[str, object]]:
    """Pure: the console's tabs, the one whose section holds `current` marked."""
    best = max((p for p, _ in TABS if current == p or current.startswith(p + "/")), key=len, default=None)
    return [{"path": p, "label": label, "current": p == best} for p, label in TABS]


def notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("done", ""))


def render_admin(
    templates: Templates,
    request: Request,
    name: str,
    user: PageUser,
    context: Mapping[str, object],
    *,
    status_code: int = 200,
) -> Response:
    values = {"tabs": tabs(request.url.path), "notice": notice(request), **context}
    return templates.render(request, name, values, user=user, status_code=status_code)


class AdminPages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    # ---- users ------------------------------------------------------------------------------

    async def users_page(self, request: Request) -> Response:
        admin = await admin_user(request)
        form = Form(values={"q": request.query_params.get("q", "")})
        found: list[useradmin.AccountRow] = []
        try:
            found = await useradmin.search(services(request).db, form.values["q"])
        except InvalidInput as exc:
            form.refuse(exc.message, "q")
        context = {"form": form, "accounts": found, "limit": useradmin.PAGE}
        return render_admin(self.templates, request, "admin/users.html", admin, context)

    async def user_page(self, request: Request) -> Response:
        admin = await admin_user(request)
        return await self._user(request, admin, Form())

    async def change_role(self, request: Request) -> Response:
        admin = await admin_user(request)
        form = await read_form(request, ("role",))
        body = validate(form, AdminUserPatch, {"role": form.values["role"]})
        if body is None:
            return await self._user(request, admin, form, status_code=400)
        return await self._change(request, admin, form, useradmin.Change(role=body.role), "role")

    async def disable(self, request: Request) -> Response:
        admin = await admin_user(request)
        return await self._change(request, admin, Form(), useradmin.Change(disabled=True), "disabled")

    async def enable(self, request: Request) -> Response:
        admin = await admin_user(request)
        return await self._change(request, admin, Form(), useradmin.Change(disabled=False), "enabled")

    async def _change(
        self, request: Request, admin: PageUser, form: Form, asked: useradmin.Change, done: str
    ) -> Response:
        user_id = request.path_params["user_id"]
        try:
            await useradmin.change_and_announce(services(request), admin.id, user_id, asked, ip=client_ip(request))
        except NotFound:
            raise HTTPException(404) from None
        except InvalidInput as exc:
            form.refuse(exc.message, exc.param)
            return await self._user(request, admin, form, status_code=400)
        return redirect(f"/app/admin/users/{user_id}?done={done}", request)

    async def _user(self, request: Request, admin: PageUser, form: Form, *, status_code: int = 200) -> Response:
        try:
            account = await useradmin.get(services(request).db, request.path_params["user_id"])
        except NotFound:
            raise HTTPException(404) from None
        context = {"account": account, "form": form, "is_self": account.id == admin.id}
        return render_admin(self.templates, request, "admin/user.html", admin, context, status_code=status_code)

    # ---- listings ---------------------------------------------------------------------------

    async def listings_page(self, request: Request) -> Response:
        admin = await admin_user(request)
        found = await moderation.all_listings(services(request).db)
        return render_admin(self.templates, request, "admin/listings.html", admin, {"listings": found})

    async def listing_page(self, request: Request) -> Response:
        admin = await admin_user(request)
        return await self._listing(request, admin, Form())

    async def moderate(self, request: Request) -> Response:
        admin = await admin_user(request)
        form = await read_form(request, ("status", "status_reason"))
        listing_id = request.path_params["listing_id"]
        try:
            await moderation.moderate(
                services(request),
                admin.id,
                listing_id,
                form.values["status"],
                form.values["status_reason"],
                ip=client_ip(request),
            )
        except ListingNotFound:
            raise HTTPException(404) from None
        except InvalidListing as exc:
            form.refuse(exc.message, exc.param)
            return await self._listing(request, admin, form, status_code=400)
        done = "listing-disabled" if form.values["status"] == "disabled" else "listing-enabled"
        return redirect(f"/app/admin/listings/{listing_id}?done={done}", request)

    async def _listing(self, request: Request, admin: PageUser, form: Form, *, status_code: int = 200) -> Response:
        db = services(request).db
        try:
            row = await listings.get_listing(db, request.path_params["listing_id"], None)
        except ListingNotFound:
            raise HTTPException(404) from None
        seller = await users.get_by_id(db, str(row["seller_id"]))
        context = {
            "listing": row,
            "models": ", ".join(m["model"] for m in row["models"]),
            "seller_email": seller.email if seller else None,
            "form": form,
            "max_reason": listings.MAX_REASON_CHARS,
        }
        return render_admin(self.templates, request, "admin/listing.html", admin, context, status_code=status_code)

    def routes(self) -> list[Route]:
        return [
            Route("/app/admin", self.users_page, methods=["GET"]),
            Route("/app/admin/users/{user_id}", self.user_page, methods=["GET"]),
            Route("/app/admin/users/{user_id}/role", self.change_role, methods=["POST"]),
            Route("/app/admin/users/{user_id}/disable", self.disable, methods=["POST"]),
            Route("/app/admin/users/{user_id}/enable", self.enable, methods=["POST"]),
            Route("/app/admin/listings", self.listings_page, methods=["GET"]),
            Route("/app/admin/listings/{listing_id}", self.listing_page, methods=["GET"]),
            Route("/app/admin/listings/{listing_id}", self.moderate, methods=["POST"]),
        ]
