"""Listings change under live traffic: a new price reaches every gateway process within a second
while a request already admitted is billed at the price it was admitted with; a deleted listing
lets its in-flight requests finish; and failover as a whole has a deadline."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest

from tests.support.fakes import Fakes
from tests.support.gateways import GatewayFactory, Gateways
from tests.support.market import Market, create_listing, provider_key, wait_for_models
from tests.support.processes import Proc
from tests.support.waiting import await_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MESSAGES = [{"role": "user", "content": "hello"}]


def list_model(gateway: Proc, market: Market, base_url: str, price: dict[str, str]) -> tuple[str, dict[str, Any]]:
    model = f"live-{uuid.uuid4().hex[:8]}"
    listing = create_listing(
        gateway,
        market.seller,
        {
            "name": "live changes",
            "provider": "openai",
            "base_url": base_url,
            "api_key": provider_key(),
            "models": [{"model": model, "upstream_model": "gpt-4o-mini"}],
            "pricing": price,
            "attest_resale": True,
        },
    )
    return model, listing


async def ask(client: httpx.AsyncClient, gateway: Proc, market: Market, model: str) -> httpx.Response:
    return await client.post(
        gateway.base_url + "/chat/completions",
        content=orjson.dumps({"model": model, "messages": MESSAGES, "max_tokens": 100}),
        headers={"Authorization": f"Bearer {market.buyer_key}", "content-type": "application/json"},
    )


async def reached_the_provider(fakes: Fakes, in_flight_before: int) -> None:
    """Until the sleepy provider holds one more request: it was routed, held and sent."""

    async def more() -> bool:
        return int((await fakes.sleepy.astats())["in_flight"]) > in_flight_before

    await await_until(more, 5, "the request to reach the provider")


def cost_of(answer: httpx.Response) -> Decimal:
    return Decimal(answer.headers["x-gateway-cost-usd"])


async def test_a_new_price_reaches_another_process_within_a_second_and_admitted_requests_keep_theirs(
    gateways: Gateways, market: Market, fakes: Fakes
) -> None:
    old_price = {"input_usd_per_million": "1", "output_usd_per_million": "2"}
    model, listing = list_model(gateways.a, market, fakes.sleepy.base_url, old_price)  # answers after 3 s
    await asyncio.to_thread(wait_for_models, gateways.b, market.buyer_key, [model])
    async with httpx.AsyncClient(timeout=30) as client:
        before = (await fakes.sleepy.astats())["in_flight"]
        admitted = asyncio.create_task(ask(client, gateways.b, market, model))  # on b, at the old price
        await reached_the_provider(fakes, before)
        changed = await client.patch(
            f"{gateways.a.url}/api/marketplace/listings/{listing['id']}",
            json={"pricing": {"input_usd_per_million": "100", "output_usd_per_million": "200"}},
            headers=market.seller.auth,
        )
        assert changed.status_code == 200, changed.text
        changed_at = time.monotonic()
        quote = {"model": model, "prompt_tokens": 1000, "max_tokens": 0}
        while True:  # b's quote shows the new price once its snapshot has it
            answer = await client.post(gateways.b.url + "/api/marketplace/quote", json=quote)
            if answer.status_code == 200 and answer.json()["estimated_cost_usd"]["max"] == "0.100000":
                break
            assert time.monotonic() - changed_at < 1.0, f"b still quotes the old price: {answer.text}"
            await asyncio.sleep(0.02)
        old = await admitted
    assert old.status_code == 200
    # 16 answer tokens and a few prompt tokens at $1/$2 per 1M: micro-dollars, not the new price's hundreds.
    assert cost_of(old) < Decimal("0.000100"), old.headers["x-gateway-cost-usd"]


async def test_deleting_a_listing_lets_its_in_flight_request_finish(
    gateways: Gateways, market: Market, fakes: Fakes
) -> None:
    model, listing = list_model(
        gateways.a, market, fakes.sleepy.base_url, {"input_usd_per_million": "1", "output_usd_per_million": "2"}
    )
    async with httpx.AsyncClient(timeout=30) as client:
        before = (await fakes.sleepy.astats())["in_flight"]
        in_flight = asyncio.create_task(ask(client, gateways.a, market, model))
        await reached_the_provider(fakes, before)
        deleted = await client.delete(
            f"{gateways.a.url}/api/marketplace/listings/{listing['id']}", headers=market.seller.auth
        )
        assert deleted.status_code == 204
        after = await ask(client, gateways.a, market, model)
        finished = await in_flight
    assert after.status_code == 404
    assert finished.status_code == 200 and finished.json()["choices"][0]["message"]["content"]


async def test_failover_as_a_whole_gives_up_at_the_deadline(gateway_factory: GatewayFactory, market: Market) -> None:
    hurried = gateway_factory.start("gateway-deadline", GATEWAY_UPSTREAM_DEADLINE="1")
    await asyncio.to_thread(wait_for_models, hurried, market.buyer_key, ["sleepy-model"])
    async with httpx.AsyncClient(timeout=30) as client:
        started = time.monotonic()
        answer = await ask(client, hurried, market, "sleepy-model")  # the provider needs 3 s
        took = time.monotonic() - started
    assert answer.status_code == 504
    assert "deadline" in answer.json()["error"]["message"]
    assert took < 2.5
