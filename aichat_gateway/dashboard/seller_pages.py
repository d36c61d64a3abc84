"""The seller's listings (`/app/seller`): the table with status, breaker, capacity and last errors;
create, edit, pause or resume, and delete after a confirmation.

Every action is marketplace/manage.py's, the functions `/api/marketplace/listings` calls, so a form
refuses what the API refuses in the same words (shown next to the field that holds the problem,
listingform.py), nothing changes on a refusal, and each action lands in the audit trail once.
"""

from __future__ import annotations

from typing import Any, TypeVar

import asyncpg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aichat_gateway import audittrail
from aichat_gateway.accounts.api import client_ip
from aichat_gateway.dashboard import listingform
from aichat_gateway.dashboard.forms import Form, read_form, validate
from aichat_gateway.dashboard.pages import page_user, redirect
from aichat_gateway.dashboard.seller_money import SellerMoneyPages
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import PageUser, Templates
from aichat_gateway.marketplace import listings, manage
from aichat_gateway.marketplace.errors import ListingNotFound, MarketplaceError
from aichat_gateway.marketplace.health import listing_health
from aichat_gateway.marketplace.listings import PROVIDERS
from aichat_gateway.marketplace.pricing import usd
from aichat_gateway.marketplace.schemas import ListingCreate, ListingPatch

# Notices after a redirect, by a fixed key: a query parameter never puts its own text on the page.
NOTICES = {
    "created": "Listing created. It is active and can be routed to now.",
    "saved": "Changes saved.",
    "paused": "Listing paused: no new requests are routed to it.",
    "resumed": "Listing resumed.",
    "deleted": "Listing deleted. Requests in flight finish; none are routed to it any more.",
}
RECENT_EVENTS = 10
M = TypeVar("M", ListingCreate, ListingPatch)


def _caller(request: Request, user: PageUser) -> manage.Caller:
    # Never as an admin here: these are the user's own listings (moderation is the admin page's).
    return manage.Caller(user.id, False, client_ip(request))


def price_text(row: asyncpg.Record) -> str:
    """A listing's price as the table shows it."""
    if row["price_multiplier"] is not None:
        return f"{format(row['price_multiplier'].normalize(), 'f')}x list price"
    return f"${usd(row['input_micro_per_million'])} in / ${usd(row['output_micro_per_million'])} out per 1M"


class SellerPages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    async def overview(self, request: Request) -> Response:
        user = await page_user(request)
        svc = services(request)
        rows = await listings.list_listings(svc.db, user.id)
        statuses = await manage.shown_statuses(svc, rows)
        health = await listing_health(svc, rows)
        shown = [
            {
                "row": row,
                "price": price_text(row),
                "status": statuses[str(row["id"])],
                "health": health[str(row["id"])],
            }
            for row in rows
        ]
        events = await _seller_events(svc.db, user.id)
        notice = NOTICES.get(request.query_params.get("done", ""))
        context = {"listings": shown, "events": events, "notice": notice, "tab": "listings"}
        return self.templates.render(request, "seller/listings.html", context, user=user)

    async def new_page(self, request: Request) -> Response:
        user = await page_user(request)
        form = Form(values={"provider": "openai", "pricing_mode": "multiplier", "multiplier": "1"})
        return self._new(request, user, form)

    async def create(self, request: Request) -> Response:
        user = await page_user(request)
        form = await read_form(request, listingform.CREATE_FIELDS)
        body = _validated(form, ListingCreate, listingform.create_body(form.values))
        if body is None:
            return self._new(request, user, form, status_code=400)
        try:
            await manage.create(services(request), _caller(request, user), body)
        except MarketplaceError as exc:
            form.refuse(exc.message, listingform.form_field(exc.param or ""))
            return self._new(request, user, form, status_code=400)
        return redirect("/app/seller?done=created", request)

    def _new(self, request: Request, user: PageUser, form: Form, status_code: int = 200) -> Response:
        context = {"form": form, "providers": PROVIDERS, "tab": "listings"}
        return self.templates.render(request, "seller/new.html", context, user=user, status_code=status_code)

    async def edit_page(self, request: Request) -> Response:
        user = await page_user(request)
        row = await _own_listing(request, user)
        values = {"name": row["name"], "base_url": row["base_url"], **listingform.pricing_values(dict(row))}
        values.update({name: str(limit) for name, limit in row["limits"].items()})
        notice = NOTICES.get(request.query_params.get("done", ""))
        return await self._edit(request, user, row, Form(values=values), notice=notice)

    async def update(self, request: Request) -> Response:
        user = await page_user(request)
        row = await _own_listing(request, user)
        form = await read_form(request, listingform.EDIT_FIELDS)
        patch = _validated(form, ListingPatch, listingform.patch_body(form.values, row["base_url"]))
        if patch is None:
            return await self._edit(request, user, row, form, status_code=400)
        try:
            await manage.change(services(request), _caller(request, user), str(row["id"]), patch)
        except MarketplaceError as exc:
            form.refuse(exc.message, listingform.form_field(exc.param or ""))
            return await self._edit(request, user, row, form, status_code=400)
        return redirect(f"/app/seller/listings/{row['id']}?done=saved", request)

    async def _edit(
        self,
        request: Request,
        user: PageUser,
        row: asyncpg.Record,
        form: Form,
        *,
        status_code: int = 200,
        notice: str | None = None,
    ) -> Response:
        svc = services(request)
        statuses = await manage.shown_statuses(svc, [row])
        health = await listing_health(svc, [row])
        context: dict[str, Any] = {
            "row": row,
            "form": form,
            "status": statuses[str(row["id"])],
            "health": health[str(row["id"])],
            "price": price_text(row),
            "models": listingform.models_text(row["models"]),
            "notice": notice,
            "tab": "listings",
        }
        return self.templates.render(request, "seller/edit.html", context, user=user, status_code=status_code)

    async def set_status(self, request: Request) -> Response:
        """Pause or resume: the API's PATCH {"status"} with its rules (a disabled listing stays so)."""
        user = await page_user(request)
        row = await _own_listing(request, user)
        form = await read_form(request, ("status",))
        patch = _validated(form, ListingPatch, {"status": form.values["status"]})
        if patch is not None:
            try:
                await manage.change(services(request), _caller(request, user), str(row["id"]), patch)
            except MarketplaceError as exc:
                form.refuse(exc.message)
        if not form.ok:
            problem = Form(errors={"": next(iter(form.errors.values()))})
            return await self._edit(request, user, row, problem, status_code=409)
        done = "paused" if form.values["status"] == "paused" else "resumed"
        return redirect(f"/app/seller/listings/{row['id']}?done={done}", request)

    async def delete_page(self, request: Request) -> Response:
        user = await page_user(request)
        row = await _own_listing(request, user)
        return self.templates.render(request, "seller/delete.html", {"row": row, "tab": "listings"}, user=user)

    async def delete(self, request: Request) -> Response:
        user = await page_user(request)
        row = await _own_listing(request, user)
        await manage.delete(services(request), _caller(request, user), str(row["id"]))
        return redirect("/app/seller?done=deleted", request)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/app/seller", self.overview, methods=["GET"]),
            Route("/app/seller/listings/new", self.new_page, methods=["GET"]),
            Route("/app/seller/listings/new", self.create, methods=["POST"]),
            Route("/app/seller/listings/{listing_id}", self.edit_page, methods=["GET"]),
            Route("/app/seller/listings/{listing_id}", self.update, methods=["POST"]),
            Route("/app/seller/listings/{listing_id}/status", self.set_status, methods=["POST"]),
            Route("/app/seller/listings/{listing_id}/delete", self.delete_page, methods=["GET"]),
            Route("/app/seller/listings/{listing_id}/delete", self.delete, methods=["POST"]),
            *SellerMoneyPages(self.templates).routes(),
        ]


def _validated(form: Form, model: type[M], data: dict[str, Any]) -> M | None:
    """`model` from the reshaped form; problems move from API paths to the form's fields."""
    scratch = Form(values=form.values)
    body = validate(scratch, model, data)
    for name, message in listingform.form_problems(scratch.errors).items():
        form.refuse(message, name)
    return body


async def _own_listing(request: Request, user: PageUser) -> asyncpg.Record:
    """The user's listing named in the path; another's (or none) is the 404 page."""
    try:
        return await listings.get_listing(services(request).db, request.path_params["listing_id"], user.id)
    except ListingNotFound:
        raise HTTPException(404) from None


async def _seller_events(db: asyncpg.Pool, user_id: str) -> list[audittrail.Event]:
    """The user's latest listing and payout events, newest first."""
    found = [
        *await audittrail.events(db, subject_id=user_id, action_prefix="listing.", limit=RECENT_EVENTS),
        *await audittrail.events(db, subject_id=user_id, action_prefix="payout.", limit=RECENT_EVENTS),
    ]
    return sorted(found, key=lambda e: e.id, reverse=True)[:RECENT_EVENTS]
