"""The seller REST API for listings (`/api/marketplace/listings`), mounted under /api.

Authentication is done by the /api sub-app's middleware; this module reads only the standard
`request.user.identity` and `request.auth.scopes`, so it needs nothing from the accounts package.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway import apibody
from aichat_gateway.apiroute import ApiRoute, Auth, api_route, query
from aichat_gateway.marketplace import listings, manage
from aichat_gateway.marketplace.errors import InvalidListing, NotAuthenticated, NotPermitted
from aichat_gateway.marketplace.offers import MAX_MODEL_CHARS, list_offers
from aichat_gateway.marketplace.pricing import usd
from aichat_gateway.marketplace.schemas import Listing, ListingCreate, ListingList, ListingPatch, OfferList
from aichat_gateway.marketplace.services import services

_MAX_BODY = 64 * 1024
M = TypeVar("M", bound=BaseModel)


def _seller(request: Request) -> tuple[str, bool]:
    """(user id, is admin)."""
    if "csrf_rejected" in request.auth.scopes:  # a session cookie on an unsafe method, without its token
        raise NotPermitted("missing or wrong CSRF token (header x-csrf-token)")
    if not request.user.is_authenticated:
        raise NotAuthenticated("authentication required: send Authorization: Bearer <access_token>")
    return request.user.identity, "admin" in request.auth.scopes


async def _body(request: Request, model: type[M]) -> M:
    return await apibody.read(request, model, InvalidListing, max_bytes=_MAX_BODY)


def _caller(request: Request) -> manage.Caller:
    seller_id, is_admin = _seller(request)
    return manage.Caller(seller_id, is_admin, request.client.host if request.client else None)


async def create_listing(request: Request) -> Response:
    caller = _caller(request)
    row = await manage.create(services(request), caller, await _body(request, ListingCreate))
    return JSONResponse(listing_json(row), status_code=201)


async def list_listings(request: Request) -> Response:
    caller = _caller(request)
    rows = await listings.list_listings(services(request).db, caller.owner_scope)
    return JSONResponse({"data": await _with_rests(request, rows)})


async def get_listing(request: Request) -> Response:
    caller = _caller(request)
    row = await listings.get_listing(services(request).db, request.path_params["listing_id"], caller.owner_scope)
    [shown] = await _with_rests(request, [row])
    return JSONResponse(shown)


async def _with_rests(request: Request, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Listings as JSON, an active one shown `exhausted` or `cooling` while it rests."""
    statuses = await manage.shown_statuses(services(request), rows)
    shown = [listing_json(r) for r in rows]
    for item in shown:
        item["status"], item["status_reason"] = statuses[item["id"]]
    return shown


async def update_listing(request: Request) -> Response:
    caller = _caller(request)
    patch = await _body(request, ListingPatch)
    row = await manage.change(services(request), caller, request.path_params["listing_id"], patch)
    return JSONResponse(listing_json(row))


async def delete_listing(request: Request) -> Response:
    await manage.delete(services(request), _caller(request), request.path_params["listing_id"])
    return Response(status_code=204)


def listing_json(row: asyncpg.Record) -> dict[str, Any]:
    if row["price_multiplier"] is not None:
        # format "f": str() of a normalised 10 is "1E+1"
        pricing: dict[str, str] = {"multiplier": format(row["price_multiplier"].normalize(), "f")}
    else:
        pricing = {
            "input_usd_per_million": usd(row["input_micro_per_million"]),
            "output_usd_per_million": usd(row["output_micro_per_million"]),
        }
    return {
        "id": str(row["id"]),
        "public_id": row["public_id"],
        "name": row["name"],
        "provider": row["provider"],
        "base_url": row["base_url"],
        "key_last4": row["key_last4"],
        "models": row["models"],
        "pricing": pricing,
        "limits": row["limits"],
        "status": row["status"],
        "status_reason": row["status_reason"],
        "attested_at": _iso(row["attested_at"]),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def routes() -> list[ApiRoute]:
    return [
        api_route(
            "GET",
            "/marketplace/offers",
            list_offers,
            operation_id="listOffers",
            summary="Public: offers with prices and last hour's figures",
            tag="marketplace",
            params=(
                query("model", {"type": "string", "minLength": 1, "maxLength": MAX_MODEL_CHARS}, "Only this model"),
            ),
            answers={200: OfferList},
            errors=(503,),
        ),
        api_route(
            "POST",
            "/marketplace/listings",
            create_listing,
            operation_id="createListing",
            summary="List a provider endpoint",
            tag="listings",
            body=ListingCreate,
            answers={201: Listing},
            auth=Auth.SESSION,
            errors=(409,),
        ),
        api_route(
            "GET",
            "/marketplace/listings",
            list_listings,
            operation_id="listListings",
            summary="The caller's listings (admins: all)",
            tag="listings",
            answers={200: ListingList},
            auth=Auth.SESSION,
        ),
        api_route(
            "GET",
            "/marketplace/listings/{listing_id}",
            get_listing,
            operation_id="getListing",
            summary="One listing",
            tag="listings",
            answers={200: Listing},
            auth=Auth.SESSION,
            errors=(404,),
        ),
        api_route(
            "PATCH",
            "/marketplace/listings/{listing_id}",
            update_listing,
            operation_id="updateListing",
            summary="Change a listing (allow-listed fields per role)",
            tag="listings",
            body=ListingPatch,
            answers={200: Listing},
            auth=Auth.SESSION,
            errors=(404, 409),
        ),
        api_route(
            "DELETE",
            "/marketplace/listings/{listing_id}",
            delete_listing,
            operation_id="deleteListing",
            summary="Delete a listing",
            tag="listings",
            answers={204: None},
            auth=Auth.SESSION,
            errors=(404,),
        ),
    ]
