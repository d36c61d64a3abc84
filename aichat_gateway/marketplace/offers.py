"""`GET /api/marketplace/offers?model=`: what a buyer can compare before sending a request.

Public: per (listing, model) a pseudonymous offer id, the prices, and the last hour's observed
latency, time to first token and success rate. Never a key, a URL or who the seller is.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.marketplace.errors import InvalidListing
from aichat_gateway.marketplace.pricing import usd
from aichat_gateway.marketplace.services import services
from aichat_gateway.marketplace.snapshot import Route
from aichat_gateway.marketplace.stats import ListingStats


def offer_json(route: Route, stats: ListingStats) -> dict[str, Any]:
    return {
        "offer_id": route.public_id,
        "model": route.model,
        "input_usd_per_million": usd(route.price.input_micro_per_million),
        "output_usd_per_million": usd(route.price.output_micro_per_million),
        "status": "active",
        "last_hour": {
            "requests": stats.requests,
            "success_rate": stats.success_rate,
            "p50_latency_ms": stats.p50_latency_ms,
            "p50_ttft_ms": stats.p50_ttft_ms,
        },
    }


MAX_MODEL_CHARS = 256


async def list_offers(request: Request) -> Response:
    model = request.query_params.get("model")
    if model is not None and not 0 < len(model) <= MAX_MODEL_CHARS:
        raise InvalidListing(f"model must be 1 to {MAX_MODEL_CHARS} characters", param="model")
    index = services(request).listings.index
    models = [model] if model is not None else index.models()
    routes = [route for name in models for route in index.routes_for(name)]
    stats = await services(request).stats.last_hour(sorted({r.listing_id for r in routes}), time.time())
    routes.sort(
        key=lambda r: (r.model, r.price.input_micro_per_million + r.price.output_micro_per_million, r.public_id)
    )
    return JSONResponse({"data": [offer_json(route, stats[route.listing_id]) for route in routes]})
