"""`POST /api/marketplace/quote`: what a request would cost now, and which offer would serve it.

Counting the prompt needs the proxy's token counter, so the endpoint lives here and is mounted
under /api next to the marketplace's routes. No authentication: it reveals only public prices.
"""

from __future__ import annotations

import zlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from aichat_gateway.marketplace.pricing import quote, usd
from aichat_gateway.marketplace.router import order_routes
from aichat_gateway.proxy.errors import InvalidRequest, ModelNotFound
from aichat_gateway.proxy.inbound import read_json_body
from aichat_gateway.proxy.services import services

_ALLOWED = {"model", "messages", "tools", "prompt_tokens", "max_tokens"}
_DEFAULT_MAX_TOKENS = 4096  # when neither the body nor the catalog says


def _count(body: dict[str, Any], name: str, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high:
        raise InvalidRequest(f"'{name}' must be an integer between 0 and {high}.", param=name)
    return value


async def quote_request(request: Request) -> Response:
    svc = services(request)
    body = await read_json_body(request, 1024 * 1024)
    unknown = sorted(set(body) - _ALLOWED)
    if unknown:
        raise InvalidRequest(f"Unknown field '{unknown[0]}'.", param=unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required.", param="model")
    prompt_tokens = _count(body, "prompt_tokens", 10_000_000)
    if prompt_tokens is None:
        if not isinstance(body.get("messages"), list):
            raise InvalidRequest("Send 'messages' (to be counted) or 'prompt_tokens'.", param="messages")
        prompt_tokens = svc.tokens.count_prompt(body)
    listed = svc.catalog.get(model)
    max_tokens = _count(body, "max_tokens", svc.settings.max_tokens_cap)
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


def routes() -> list[BaseRoute]:
    return [Route("/marketplace/quote", quote_request, methods=["POST"])]
