"""The seller REST API for listings (`/api/marketplace/listings`), mounted under /api.

Authentication is done by the /api sub-app's middleware; this module reads only the standard
`request.user.identity` and `request.auth.scopes`, so it needs nothing from the accounts package.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway import apibody
from aichat_gateway.apiroute import ApiRoute, Auth, api_route, query
from aichat_gateway.marketplace import listings, moderation
from aichat_gateway.marketplace.changes import NewEndpoint, parse_changes
from aichat_gateway.marketplace.errors import InvalidListing, NotAuthenticated, NotPermitted
from aichat_gateway.marketplace.offers import MAX_MODEL_CHARS, list_offers
from aichat_gateway.marketplace.pricing import usd
from aichat_gateway.marketplace.resting import shown_status
from aichat_gateway.marketplace.schemas import Listing, ListingCreate, ListingList, ListingPatch, OfferList
from aichat_gateway.marketplace.services import services
from aichat_gateway.marketplace.urls import validate_upstream_url

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


async def create_listing(request: Request) -> Response:
    seller_id, _ = _seller(request)
    svc = services(request)
    new = listings.new_listing(await _body(request, ListingCreate), svc.catalog)
    base_url = await validate_upstream_url(new.base_url, svc.settings.allow_private_upstreams)
    await svc.key_checker(new.provider, base_url, new.api_key)
    row = await listings.insert_listing(svc.db, svc.vault, seller_id, replace(new, base_url=base_url))
    await svc.listings.announce_change()
    return JSONResponse(listing_json(row), status_code=201)


async def list_listings(request: Request) -> Response:
    seller_id, is_admin = _seller(request)
    rows = await listings.list_listings(services(request).db, None if is_admin else seller_id)
    return JSONResponse({"data": await _with_rests(request, rows)})


async def get_listing(request: Request) -> Response:
    seller_id, is_admin = _seller(request)
    row = await listings.get_listing(
        services(request).db, request.path_params["listing_id"], None if is_admin else seller_id
    )
    [shown] = await _with_rests(request, [row])
    return JSONResponse(shown)


async def _with_rests(request: Request, rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    """Listings as JSON, an active one shown `exhausted` or `cooling` while it rests."""
    svc = services(request)
    shown = [listing_json(r) for r in rows]
    rests = await svc.rests.current([item["id"] for item in shown])
    now = svc.clock()
    for item in shown:
        override = shown_status(item["status"], rests.get(item["id"]), now)
        if override is not None:
            item["status"], item["status_reason"] = override
    return shown


async def update_listing(request: Request) -> Response:
    seller_id, is_admin = _seller(request)
    svc = services(request)
    owner = None if is_admin else seller_id
    current = await listings.get_listing(svc.db, request.path_params["listing_id"], owner)
    changes = parse_changes(
        await _body(request, ListingPatch),
        is_owner=str(current["seller_id"]) == seller_id,
        is_admin=is_admin,
        current_status=current["status"],
        models=[m["model"] for m in current["models"]],
        catalog=svc.catalog,
    )
    if changes.endpoint is not None:
        changes = replace(changes, endpoint=await _checked_endpoint(request, current, changes.endpoint))
    row = await listings.update_listing(svc.db, svc.vault, str(current["id"]), owner, changes)
    if is_admin and str(current["seller_id"]) != seller_id and changes.status is not None:
        await moderation.record(svc.db, row, seller_id, request.client.host if request.client else None)
    await svc.listings.announce_change()
    return JSONResponse(listing_json(row))


async def _checked_endpoint(request: Request, current: asyncpg.Record, endpoint: NewEndpoint) -> NewEndpoint:
    """The request's new key, checked with the provider where it will be sent: the new URL that
    came with it, else the listing's own. Only this request's key is ever sent (no stored key is
    decrypted here), and the URL it was checked with is written with it, so a concurrent change
    cannot pair the key with another URL."""
    svc = services(request)
    if endpoint.base_url is None:
        base_url = str(current["base_url"])
    else:
        base_url = await validate_upstream_url(endpoint.base_url, svc.settings.allow_private_upstreams)
    await svc.key_checker(current["provider"], base_url, endpoint.api_key)
    return NewEndpoint(api_key=endpoint.api_key, base_url=base_url)


async def delete_listing(request: Request) -> Response:
    seller_id, is_admin = _seller(request)
    await listings.delete_listing(
        services(request).db, request.path_params["listing_id"], None if is_admin else seller_id
    )
    await services(request).listings.announce_change()
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
