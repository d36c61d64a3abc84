"""What the provider receives: the buyer's fields untouched, except the model name, the usage
request on streams and the gateway's own extension fields."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.fakes import FakeUpstream
from tests.support.market import Market
from tests.support.processes import Proc

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
PASSTHROUGH: dict[str, Any] = {
    "messages": MESSAGES,
    "tools": TOOLS,
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": {"type": "json_object"},
    "n": 2,
    "seed": 1234,
    "logprobs": True,
    "top_logprobs": 3,
    "temperature": 0.25,
    "user": "end-user-42",
    "metadata": {"team": "qa", "ticket": "T-1"},
    "some_future_field": {"nested": [1, 2.5, None, "x"]},
}
GATEWAY_EXTENSION = {"provider": {"sort": "price", "ignore": ["lst_nope"]}}


@pytest.fixture
async def http(gateway: Proc, market: Market) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {market.buyer_key}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        yield client


async def test_openai_fields_reach_the_provider_identical(http: httpx.AsyncClient, fake_upstream: FakeUpstream) -> None:
    answer = await http.post("/chat/completions", json={"model": "gpt-4o", **PASSTHROUGH})
    assert answer.status_code == 200, answer.text
    sent = fake_upstream.last_body()
    for name, value in PASSTHROUGH.items():
        assert sent[name] == value, name


async def test_the_model_is_replaced_by_the_listings_upstream_model(
    http: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    answer = await http.post("/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES})
    assert answer.status_code == 200, answer.text
    assert fake_upstream.last_body()["model"] == "gpt-4o-2024-08-06"


async def test_the_gateway_extension_field_provider_is_not_forwarded(
    http: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    answer = await http.post(
        "/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES, **GATEWAY_EXTENSION}
    )
    assert answer.status_code == 200, answer.text
    sent = fake_upstream.last_body()
    assert "provider" not in sent
    assert sent["messages"] == MESSAGES


async def test_the_gateway_extension_field_provider_is_not_forwarded_to_embeddings(
    http: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    answer = await http.post(
        "/embeddings", json={"model": "text-embedding-3-small", "input": "hi", "dimensions": 8, **GATEWAY_EXTENSION}
    )
    assert answer.status_code == 200, answer.text
    sent = fake_upstream.last_body()
    assert "provider" not in sent
    assert (sent["input"], sent["dimensions"]) == ("hi", 8)


@pytest.mark.parametrize("stream_options", [None, {"include_usage": False}, {"include_usage": True}])
async def test_a_stream_always_asks_the_provider_for_usage(
    http: httpx.AsyncClient, fake_upstream: FakeUpstream, stream_options: dict[str, bool] | None
) -> None:
    body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "seed": 7}
    if stream_options is not None:
        body["stream_options"] = stream_options
    async with http.stream("POST", "/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = (await answer.aread()).decode()
    assert text.rstrip().endswith("data: [DONE]")
    sent = fake_upstream.last_body()
    assert sent["stream"] is True and sent["seed"] == 7
    assert sent["stream_options"]["include_usage"] is True
    assert ('"usage":{' in text) == bool(stream_options and stream_options["include_usage"])


async def test_the_buyers_headers_are_not_forwarded_to_the_provider(
    http: httpx.AsyncClient, fake_upstream: FakeUpstream
) -> None:
    """Not even the fake's own steering headers: a buyer cannot make the provider misbehave."""
    steering = {"x-fake-error-rate": "1", "x-fake-chunks": "2", "x-custom-trace": "abc", "openai-organization": "o"}
    answer = await http.post("/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}, headers=steering)
    assert answer.status_code == 200, answer.text
    sent = fake_upstream.stats()["last_request"]["headers"]
    assert not set(steering) & set(sent)
    assert sent["authorization"] != (http.headers["authorization"])[-4:]
