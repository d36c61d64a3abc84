"""`POST /api/marketplace/quote`: what a request would cost now, and which offer would serve it.

Counting the prompt needs the proxy's token counter, so the endpoint lives here and is mounted
under /api next to the marketplace's routes. No authentication: it reveals only public prices.
`quote_offers` is the one computation: the JSON API answers with its first (the offer that would
serve the request), the dashboard's quote page shows every offer's cost.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway import apibody
from aichat_gateway.apiroute import ApiRoute, api_route
from aichat_gateway.marketplace.pricing import Price, Quote, quote, usd
from aichat_gateway.marketplace.router import order_routes
from aichat_gateway.proxy.errors import InvalidRequest, ModelNotFound, PayloadTooLarge
from aichat_gateway.proxy.schemas import Quote as QuoteAnswer
from aichat_gateway.proxy.schemas import QuoteRequest
from aichat_gateway.proxy.services import ProxyServices, services

MAX_BODY = 1024 * 1024
_DEFAULT_MAX_TOKENS = 4096  # when neither the body nor the catalog says


@dataclass(frozen=True, slots=True)
class OfferQuote:
    offer_id: str
    price: Price
    cost: Quote


@dataclass(frozen=True, slots=True)
class Quotes:
    """A request's size and its cost at every offer of its model, in the order the router would
    try them for it (cheapest first): `offers[0]` serves it."""

    model: str
    prompt_tokens: int
    max_tokens: int
    offers: tuple[OfferQuote, ...]


def quote_offers(svc: ProxyServices, body: QuoteRequest) -> Quotes:
    """Raises InvalidRequest (with the body's field as `param`) or ModelNotFound."""
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
    ordered = order_routes(tables.routes, zlib.crc32(model.encode()), tables)
    return Quotes(
        model=model,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        offers=tuple(OfferQuote(r.public_id, r.price, quote(r.price, prompt_tokens, max_tokens)) for r in ordered),
    )


async def quote_request(request: Request) -> Response:
    body = await apibody.read(
        request,
        QuoteRequest,
        InvalidRequest,
        max_bytes=MAX_BODY,
        too_large=lambda: PayloadTooLarge(f"Request body is larger than the {MAX_BODY}-byte limit."),
    )
    quotes = quote_offers(services(request), body)
    best = quotes.offers[0]
    return JSONResponse(
        {
            "model": quotes.model,
            "prompt_tokens": quotes.prompt_tokens,
            "max_tokens": quotes.max_tokens,
            "offer_id": best.offer_id,
            "input_usd_per_million": usd(best.price.input_micro_per_million),
            "output_usd_per_million": usd(best.price.output_micro_per_million),
            "estimated_cost_usd": {"min": usd(best.cost.low_micro), "max": usd(best.cost.high_micro)},
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
            answers={200: QuoteAnswer},
            errors=(404, 413, 503),
        )
    ]
