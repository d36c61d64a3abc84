"""Buyers steer the router per request with an OpenRouter-style `provider` object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from aichat_gateway.config.settings import Settings
from tests.support.fakes import Fakes
from tests.support.market import (
    PASSWORD_BUYER,
    PASSWORD_SELLER,
    PRICE_CHEAP,
    PRICE_DEAR,
    Account,
    Market,
    create_listing,
    fund,
    provider_key,
    register_and_login,
    serving,
    wait_for_models,
)
from tests.support.processes import Proc

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


# ---- a buyer's own listings (issue 12: self-dealing) ---------------------------------------------

SHARED_MODEL = "self-dealing-shared-model"  # the buyer's own cheap listing and a rival's dear one
OWN_ONLY_MODEL = "self-dealing-own-model"  # served by the buyer's own listing alone


@dataclass(frozen=True)
class SelfDealer:
    """A user who both sells and buys: funded only by promotional credit, with a gateway key."""

    account: Account
    key: str
    own: str  # public id of their listing of SHARED_MODEL (the cheaper one)
    rival: str  # public id of another seller's listing of SHARED_MODEL


def listing_body(name: str, base_url: str, served: tuple[list[dict[str, str]], dict[str, str]]) -> dict[str, Any]:
    models, pricing = served
    return {
        "name": name,
        "provider": "openai",
        "base_url": base_url,
        "api_key": provider_key(),
        "models": models,
        "pricing": pricing,
        "attest_resale": True,
    }


@pytest.fixture(scope="module")
def self_dealer(gateway: Proc, fakes: Fakes, proxy_settings: Settings) -> SelfDealer:
    dealer = register_and_login(gateway, "self-dealer", PASSWORD_BUYER)
    rival = register_and_login(gateway, "rival-seller", PASSWORD_SELLER)
    fund(proxy_settings, dealer.id, "20")
    base = fakes.main.base_url
    own = create_listing(gateway, dealer, listing_body("own, cheap", base, serving(SHARED_MODEL, PRICE_CHEAP)))
    create_listing(gateway, dealer, listing_body("own, alone", base, serving(OWN_ONLY_MODEL, PRICE_CHEAP)))
    other = create_listing(gateway, rival, listing_body("rival, dear", base, serving(SHARED_MODEL, PRICE_DEAR)))
    created = httpx.post(gateway.url + "/api/keys", json={"name": "dealer"}, headers=dealer.auth, timeout=10)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    wait_for_models(gateway, key, [SHARED_MODEL, OWN_ONLY_MODEL])
    return SelfDealer(dealer, key, own["public_id"], other["public_id"])


async def ask_as(gateway: Proc, dealer: SelfDealer, model: str, provider: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"model": model, "messages": MESSAGES}
    if provider is not None:
        body["provider"] = provider
    headers = {"Authorization": f"Bearer {dealer.key}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        return await client.post("/chat/completions", json=body)


async def test_a_request_naming_only_the_buyers_own_listing_is_404_and_says_why(
    gateway: Proc, self_dealer: SelfDealer
) -> None:
    answer = await ask_as(gateway, self_dealer, SHARED_MODEL, {"only": [self_dealer.own]})
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error["param"] == "provider"
    assert "your own listings are never routed to your requests" in error["message"]


async def test_the_buyers_own_cheaper_listing_is_skipped_for_another_sellers(
    gateway: Proc, self_dealer: SelfDealer
) -> None:
    for provider in (None, {"order": [self_dealer.own], "sort": "price"}):
        answer = await ask_as(gateway, self_dealer, SHARED_MODEL, provider)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-gateway-listing"] == self_dealer.rival


async def test_a_model_served_only_by_the_buyers_own_listing_is_404_naming_provider(
    gateway: Proc, self_dealer: SelfDealer
) -> None:
    answer = await ask_as(gateway, self_dealer, OWN_ONLY_MODEL)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["param"] == "provider"
    assert "your own" in answer.json()["error"]["message"]
