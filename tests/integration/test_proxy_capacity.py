"""A seller's capacity limits hold exactly across gateway processes, and refusals are clean 429s."""

from __future__ import annotations

import asyncio
import time

import httpx

from tests.support.fakes import Fakes
from tests.support.gateways import Gateways
from tests.support.market import Market, create_listing, provider_key, wait_for_models
from tests.support.waiting import wait_until

RPM = 50
REQUESTS = 200


def test_a_requests_per_minute_cap_is_exact_under_200_concurrent_requests_over_two_processes(
    gateways: Gateways, market: Market, fakes: Fakes
) -> None:
    create_listing(
        gateways.a,
        market.seller,
        {
            "name": "proxy tests: capped",
            "provider": "openai",
            "base_url": fakes.main.base_url,
            "api_key": provider_key(),
            "models": [{"model": "capped-model"}],
            "pricing": {"input_usd_per_million": "1", "output_usd_per_million": "1"},
            "limits": {"rpm": RPM},
            "attest_resale": True,
        },
    )
    for gateway in (gateways.a, gateways.b):
        wait_for_models(gateway, market.buyer_key, ["capped-model"])
    # Minute windows: start well inside one, so the burst is counted against a single window.
    wait_until(lambda: time.time() % 60 < 45, 20.0, "the start of a minute window", interval=0.2)

    async def burst() -> list[httpx.Response]:
        headers = {"Authorization": f"Bearer {market.buyer_key}"}
        body = {"model": "capped-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
        limits = httpx.Limits(max_connections=REQUESTS)
        async with httpx.AsyncClient(headers=headers, timeout=30, limits=limits) as client:
            targets = [gateways.a.base_url, gateways.b.base_url]
            return await asyncio.gather(
                *(client.post(targets[i % 2] + "/chat/completions", json=body) for i in range(REQUESTS))
            )

    answers = asyncio.run(burst())
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == RPM
    others = [(a.status_code, a.text[:200]) for a in answers if a.status_code not in (200, 429)]
    assert statuses.count(429) == REQUESTS - RPM, others[:3]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
