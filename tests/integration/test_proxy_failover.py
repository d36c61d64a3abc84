"""Failover before the first byte: a failing listing is skipped for the next one, invisibly to the buyer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from openai import APIError, AsyncOpenAI

from tests.support.calls import request_id
from tests.support.fakes import FAKE_REPLY, Fakes
from tests.support.gateways import Gateways
from tests.support.market import Market
from tests.support.processes import Proc
from tests.support.usage import UsageEvents

pytestmark = [pytest.mark.integration, pytest.mark.faults]

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def http(gateway: Proc, market: Market) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {market.buyer_key}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    "model, bad, good",
    [
        ("failover-500-model", "failover-500-bad", "failover-500-good"),
        ("failover-dead-model", "failover-dead-bad", "failover-dead-good"),
    ],
)
async def test_a_failing_listing_is_skipped_for_the_next_one(
    http: httpx.AsyncClient, market: Market, model: str, bad: str, good: str
) -> None:
    answer = await http.post("/chat/completions", json={"model": model, "messages": MESSAGES})
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == FAKE_REPLY
    assert answer.headers["x-gateway-attempts"] == "2"
    assert answer.headers["x-gateway-listing"] == market.listings[good]["public_id"]


async def test_a_stream_fails_over_before_its_first_byte(http: httpx.AsyncClient, market: Market, fakes: Fakes) -> None:
    before = fakes.failing.stats()["requests"]
    body = {"model": "failover-500-model", "messages": MESSAGES, "stream": True}
    async with http.stream("POST", "/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        text = (await answer.aread()).decode()
    assert fakes.failing.stats()["requests"] == before + 1
    assert answer.headers["x-gateway-attempts"] == "2"
    assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text


async def test_the_usage_event_of_a_failed_over_request_names_the_listing_that_served_it(
    http: httpx.AsyncClient, market: Market, usage_events: UsageEvents
) -> None:
    rid = request_id()
    answer = await http.post(
        "/chat/completions", json={"model": "failover-500-model", "messages": MESSAGES}, headers={"x-request-id": rid}
    )
    assert answer.status_code == 200
    [event] = await usage_events.wait_for(rid)
    assert event["listing_id"] == market.listings["failover-500-good"]["id"]
    assert (event["attempts"], event["outcome"], event["completion_tokens"]) == ("2", "ok", "16")


async def test_a_provider_that_stalls_mid_stream_ends_the_stream_with_an_error_event(
    gateways: Gateways, market: Market, usage_events: UsageEvents
) -> None:
    """After the first byte there is no failover: the strict gateway's 0.5 s read timeout cuts the
    stream (chunks 1.5 s apart) and the buyer gets one last error event instead of [DONE]."""
    rid = request_id()
    body = {"model": "stalling-model", "messages": MESSAGES, "stream": True}
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream(
            "POST",
            gateways.strict.base_url + "/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {market.buyer_key}", "x-request-id": rid},
        ) as answer,
    ):
        assert answer.status_code == 200
        lines = [line async for line in answer.aiter_lines() if line.startswith("data:")]
    assert "data: [DONE]" not in lines
    assert '"code":"upstream_error"' in lines[-1]
    [event] = await usage_events.wait_for(rid)
    assert (event["outcome"], event["status"], event["stream"]) == ("upstream_error", "200", "1")


async def test_the_sdk_raises_an_api_error_for_a_stream_cut_mid_way(gateways: Gateways, market: Market) -> None:
    async with AsyncOpenAI(base_url=gateways.strict.base_url, api_key=market.buyer_key, max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="stalling-model", messages=[{"role": "user", "content": "hello"}], stream=True
        )
        with pytest.raises(APIError):
            async for _ in stream:
                pass
