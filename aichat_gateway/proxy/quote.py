"""`POST /api/marketplace/quote`: what a request would cost now, and which offer would serve it.

Counting the prompt needs the proxy's token counter, so the endpoint lives here and is mounted
under /api next to the marketplace's routes. No authentication: it reveals only public prices.
"""

from __future__ import annotations

import zlib

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway import apibody
from aichat_gateway.apiroute import ApiRoute, api_route
from aichat_gateway.marketplace.pricing import quote, usd
from aichat_gateway.marketplace.router import order_routes
from aichat_gateway.proxy.errors import InvalidRequest, ModelNotFound, PayloadTooLarge
from aichat_gateway.proxy.schemas import Quote, QuoteRequest
from aichat_gateway.proxy.services import services

MAX_BODY = 1024 * 1024
_DEFAULT_MAX_TOKENS = 4096  # when neither the body nor the catalog says


async def quote_request(request: Request) -> Response:
    svc = services(request)
    body = await apibody.read(
        request,
        QuoteRequest,
        InvalidRequest,
        max_bytes=MAX_BODY,
        too_large=lambda: PayloadTooLarge(f"Request body is larger than the {MAX_BODY}-byte limit."),
    )
    model = body.model
    prompt_tokens = body.prompt_tokens
    if prompt_tokens is None:
        if body.messages is None:
            raise InvalidRequest("Send 'messages' (to be counted) or 'prompt_tokens'.", param="messages")
        prompt_tokens = svc.tokens.count_prompt(body.model_dump(include={"messages", "tools"}, exclude_none=True))
    listed = svc.catalog.get(model)
    max_tokens = body.max_tokens
    if max_tokens is not None and max_tokens > svc.settings.max_tokens_cap:
        raise InvalidRequest(f"'max_tokens' must be at most {svc.settings.max_tokens_cap}.", param="max_tokens")
    if max_tokens is None:
        max_tokens = listed.max_output_tokens if listed else _DEFAULT_MAX_TOKENS
    tables = svc.listings.index.tables_for(model)
    if not tables.routes:
        raise ModelNotFound(f"No active listing serves `{model}` right now.", param="model")
    best = order_routes(tables.routes, zlib.crc32(model.encode()), tables)[0]
    cost = quote(best.price, prompt_tokens, max_tokens)
    return JSONResponse(
        {
            "model": model,
            "prompt_tokens": prompt_tokens,
            "max_tokens": max_tokens,
            "offer_id": best.public_id,
            "input_usd_per_million": usd(best.price.input_micro_per_million),
            "output_usd_per_million": usd(best.price.output_micro_per_million),
            "estimated_cost_usd": {"min": usd(cost.low_micro), "max": usd(cost.high_micro)},
        }
    )


def routes() -> list[ApiRoute]:
    return [
        api_route(
            "POST",
            "/marketplace/quote",
            quote_request,
            operation_id="quote",
            summary="Public: the offer that would serve a request now, and its cost range",
            tag="marketplace",
            body=QuoteRequest,
            answers={200: Quote},
            errors=(404, 413, 503),
        )
    ]
