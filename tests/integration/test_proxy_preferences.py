"""Buyers steer the router per request with an OpenRouter-style `provider` object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from conftest import Market, Proc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MODEL = "failover-500-model"  # two listings: "failover-500-bad" (answers 500) and "failover-500-good"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def http(gateway: Proc, market: Market) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {market.buyer_key}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        yield client


def public_id(market: Market, name: str) -> str:
    value: str = market.listings[name]["public_id"]
    return value


async def ask(http: httpx.AsyncClient, provider: Any) -> httpx.Response:
    return await http.post("/chat/completions", json={"model": MODEL, "messages": MESSAGES, "provider": provider})


async def test_order_puts_the_named_listing_first(http: httpx.AsyncClient, market: Market) -> None:
    answer = await ask(http, {"order": [public_id(market, "failover-500-good")]})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-gateway-attempts"] == "1"
    assert answer.headers["x-gateway-listing"] == public_id(market, "failover-500-good")


async def test_an_ignored_listing_is_never_tried(http: httpx.AsyncClient, market: Market) -> None:
    answer = await ask(http, {"ignore": [public_id(market, "failover-500-bad")]})
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-gateway-attempts"] == "1"


async def test_only_without_fallbacks_tries_just_that_listing(http: httpx.AsyncClient, market: Market) -> None:
    answer = await ask(http, {"only": [public_id(market, "failover-500-bad")], "allow_fallbacks": False})
    assert answer.status_code == 502
    assert answer.headers["x-gateway-attempts"] == "1"


async def test_preferences_that_allow_no_listing_answer_404_naming_provider(http: httpx.AsyncClient) -> None:
    answer = await ask(http, {"only": ["no-such-listing"]})
    assert answer.status_code == 404
    assert answer.json()["error"]["param"] == "provider"


async def test_a_misspelt_preference_is_refused_rather_than_ignored(http: httpx.AsyncClient) -> None:
    answer = await ask(http, {"ingore": ["x"]})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and "provider" in (error["param"] or "")


async def test_a_float_max_price_is_refused_with_the_field_named(http: httpx.AsyncClient) -> None:
    answer = await ask(http, {"max_price": {"prompt": 0.1}})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "provider.max_price.prompt"


async def test_a_max_price_below_every_listing_leaves_nothing_to_route_to(http: httpx.AsyncClient) -> None:
    answer = await ask(http, {"max_price": {"prompt": "0", "completion": "0"}})
    assert answer.status_code == 404
    assert "provider preferences" in answer.json()["error"]["message"]


@pytest.mark.parametrize("sort", ["price", "latency", "load", "balanced"])
async def test_every_sort_serves_the_request(http: httpx.AsyncClient, sort: str) -> None:
    answer = await ask(http, {"sort": sort})
    assert answer.status_code == 200, answer.text
