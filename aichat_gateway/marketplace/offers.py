"""`GET /api/marketplace/offers?model=`: what a buyer can compare before sending a request.

Public: per (listing, model) a pseudonymous offer id, the prices, whether it is resting, and the
last hour's observed latency, time to first token and success rate. Never a key, a URL or who the
seller is. `current_offers` is the one query: the JSON API and the dashboard's market pages both
call it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.marketplace.errors import InvalidListing
from aichat_gateway.marketplace.pricing import usd
from aichat_gateway.marketplace.resting import shown_status
from aichat_gateway.marketplace.services import MarketplaceServices, services
from aichat_gateway.marketplace.stats import ListingStats

MAX_MODEL_CHARS = 256
ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class PublicOffer:
    """One (listing, model) as anyone may see it: nothing that leads to the seller or the key."""

    offer_id: str
    model: str
    input_micro_per_million: int
    output_micro_per_million: int
    status: str  # active, or exhausted / cooling while the listing rests
    last_hour: ListingStats


def offer_json(offer: PublicOffer) -> dict[str, Any]:
    stats = offer.last_hour
    return {
        "offer_id": offer.offer_id,
        "model": offer.model,
        "input_usd_per_million": usd(offer.input_micro_per_million),
        "output_usd_per_million": usd(offer.output_micro_per_million),
        "status": offer.status,
        "last_hour": {
            "requests": stats.requests,
            "success_rate": stats.success_rate,
            "p50_latency_ms": stats.p50_latency_ms,
            "p50_ttft_ms": stats.p50_ttft_ms,
        },
    }


def check_model(model: str | None) -> str | None:
    if model is not None and not 0 < len(model) <= MAX_MODEL_CHARS:
        raise InvalidListing(f"model must be 1 to {MAX_MODEL_CHARS} characters", param="model")
    return model


async def current_offers(svc: MarketplaceServices, model: str | None = None) -> list[PublicOffer]:
    """Every routable offer (of `model`, else of every model), by model then cheapest first."""
    index = svc.listings.index
    models = [model] if model is not None else index.models()
    routes = [route for name in models for route in index.routes_for(name)]
    listing_ids = sorted({r.listing_id for r in routes})
    stats = await svc.stats.last_hour(listing_ids, time.time())
    rests = await svc.rests.current(listing_ids)
    now = svc.clock()
    routes.sort(
        key=lambda r: (r.model, r.price.input_micro_per_million + r.price.output_micro_per_million, r.public_id)
    )
    offers = []
    for route in routes:
        resting = shown_status(ACTIVE, rests.get(route.listing_id), now)
        offers.append(
            PublicOffer(
                offer_id=route.public_id,
                model=route.model,
                input_micro_per_million=route.price.input_micro_per_million,
                output_micro_per_million=route.price.output_micro_per_million,
                status=ACTIVE if resting is None else resting[0],
                last_hour=stats[route.listing_id],
            )
        )
    return offers


async def list_offers(request: Request) -> Response:
    model = check_model(request.query_params.get("model"))
    offers = await current_offers(services(request), model)
    return JSONResponse({"data": [offer_json(offer) for offer in offers]})
