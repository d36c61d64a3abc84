"""The offers and quotes the market pages show come from the same functions as the public API."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from aichat_gateway.marketplace.offers import current_offers, offer_json
from aichat_gateway.marketplace.resting import EXHAUSTED
from aichat_gateway.proxy.errors import ModelNotFound
from aichat_gateway.proxy.quote import quote_offers
from aichat_gateway.proxy.schemas import QuoteRequest
from tests.support.app import replace_services, services_of
from tests.support.market_seed import seller_with_listing_in_app, unique_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture(autouse=True)
def accept_every_key(app: Starlette) -> None:
    """No provider stands behind these listings: only their prices and figures are looked at."""

    async def checker(provider: str, base_url: str, api_key: str) -> None:
        return None

    replace_services(app, key_checker=checker)


async def test_the_api_answers_with_the_offers_current_offers_finds(app: Starlette, client: httpx.AsyncClient) -> None:
    model = unique_model()
    await seller_with_listing_in_app(client, "2", "4", models=(model,))
    await seller_with_listing_in_app(client, "1", "3", models=(model,))
    answer = await client.get("/api/marketplace/offers", params={"model": model})
    assert answer.status_code == 200
    found = [offer_json(o) for o in await current_offers(services_of(app), model)]
    assert answer.json()["data"] == found
    assert [o["input_usd_per_million"] for o in found] == ["1.000000", "2.000000"]


async def test_a_listing_resting_at_its_cap_is_offered_as_exhausted(app: Starlette, client: httpx.AsyncClient) -> None:
    model = unique_model()
    resting = await seller_with_listing_in_app(client, "1", "1", models=(model,))
    await seller_with_listing_in_app(client, "2", "2", models=(model,))
    svc = services_of(app)
    await svc.rests.begin(resting.listing_id, EXHAUSTED, svc.clock() + 60, "rpm limit reached")
    answer = await client.get("/api/marketplace/offers", params={"model": model})
    statuses: dict[str, Any] = {o["offer_id"]: o["status"] for o in answer.json()["data"]}
    assert statuses[resting.offer_id] == "exhausted"
    assert sorted(statuses.values()) == ["active", "exhausted"]


async def test_a_quote_prices_every_offer_and_the_api_answers_with_the_first(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    model = unique_model()
    dear = await seller_with_listing_in_app(client, "5", "10", models=(model,))
    cheap = await seller_with_listing_in_app(client, "1", "2", models=(model,))
    quotes = quote_offers(services_of(app), QuoteRequest(model=model, prompt_tokens=1000, max_tokens=500))
    assert [q.offer_id for q in quotes.offers] == [cheap.offer_id, dear.offer_id]
    # 1,000 prompt tokens at $1/M, and 500 answer tokens at $2/M at most
    assert (quotes.offers[0].cost.low_micro, quotes.offers[0].cost.high_micro) == (1000, 2000)
    body = {"model": model, "prompt_tokens": 1000, "max_tokens": 500}
    answer = await client.post("/api/marketplace/quote", json=body)
    assert answer.json()["offer_id"] == cheap.offer_id
    assert answer.json()["estimated_cost_usd"] == {"min": "0.001000", "max": "0.002000"}


async def test_a_model_nobody_sells_has_no_quote(app: Starlette) -> None:
    with pytest.raises(ModelNotFound) as refused:
        quote_offers(services_of(app), QuoteRequest(model=unique_model(), prompt_tokens=1))
    assert refused.value.param == "model"
