"""Every way a `/v1` request can fail, each in OpenAI's error shape with the right status and code."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.calls import assert_openai_error, request_id
from tests.support.fakes import Fakes
from tests.support.gateways import Gateways
from tests.support.market import Market
from tests.support.processes import Proc

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hello"}]


def chat(model: str = "gpt-4o-mini", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **fields}


@pytest.fixture
async def http(gateway: Proc, market: Market) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {market.buyer_key}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
async def strict(gateways: Gateways, market: Market) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway with GATEWAY_MAX_BODY_BYTES=4096 and GATEWAY_UPSTREAM_READ_TIMEOUT=0.5."""
    headers = {"Authorization": f"Bearer {market.buyer_key}"}
    async with httpx.AsyncClient(base_url=gateways.strict.base_url, headers=headers, timeout=10) as client:
        yield client


# ---- 400 ------------------------------------------------------------------------------------------


async def test_a_body_that_is_not_json_is_400(http: httpx.AsyncClient) -> None:
    answer = await http.post(
        "/chat/completions",
        content=b'{"model": "gpt-4o-mini", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert_openai_error(answer, 400, "invalid_request")


async def test_an_empty_body_is_400(http: httpx.AsyncClient) -> None:
    answer = await http.post("/chat/completions", content=b"")
    assert_openai_error(answer, 400, "invalid_request")


async def test_a_json_body_that_is_not_an_object_is_400(http: httpx.AsyncClient) -> None:
    answer = await http.post("/chat/completions", json=[chat()])
    assert_openai_error(answer, 400, "invalid_request")


async def test_a_request_without_messages_is_400_naming_messages(http: httpx.AsyncClient) -> None:
    answer = await http.post("/chat/completions", json={"model": "gpt-4o-mini"})
    assert_openai_error(answer, 400, "invalid_request", param="messages")


async def test_a_request_without_model_is_400_naming_model(http: httpx.AsyncClient) -> None:
    answer = await http.post("/chat/completions", json={"messages": MESSAGES})
    assert_openai_error(answer, 400, "invalid_request", param="model")


@pytest.mark.parametrize("value", ["10", 1.5, True, 0, -3, 10**12])
async def test_a_max_tokens_that_is_not_a_sane_integer_is_400(http: httpx.AsyncClient, value: Any) -> None:
    answer = await http.post("/chat/completions", json=chat(max_tokens=value))
    assert_openai_error(answer, 400, "invalid_request", param="max_tokens")


async def test_stream_options_without_stream_is_400(http: httpx.AsyncClient) -> None:
    answer = await http.post("/chat/completions", json=chat(stream_options={"include_usage": True}))
    assert_openai_error(answer, 400, "invalid_request", param="stream_options")


async def test_an_embeddings_request_without_input_is_400(http: httpx.AsyncClient) -> None:
    answer = await http.post("/embeddings", json={"model": "text-embedding-3-small"})
    assert_openai_error(answer, 400, "invalid_request", param="input")


async def test_a_providers_own_400_reaches_the_buyer_as_the_provider_sent_it(http: httpx.AsyncClient) -> None:
    # The gateway accepts a mix of strings and token ids; the fake provider refuses it.
    answer = await http.post("/embeddings", json={"model": "text-embedding-3-small", "input": ["a", 1]})
    error = assert_openai_error(answer, 400, param="input")
    assert "input" in error["message"]


# ---- 401 ------------------------------------------------------------------------------------------


async def test_a_request_without_a_key_is_401(gateway: Proc) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
        answer = await client.post("/chat/completions", json=chat())
    assert_openai_error(answer, 401, "missing_api_key")


@pytest.mark.parametrize(
    "key",
    [
        "agw-" + secrets.token_urlsafe(32)[:43],  # our shape, but no such key
        "sk-not-a-gateway-key-1234567890",
        "agw-short",
    ],
)
async def test_a_request_with_an_unknown_key_is_401(gateway: Proc, key: str) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
        answer = await client.post("/chat/completions", json=chat(), headers={"Authorization": f"Bearer {key}"})
    assert_openai_error(answer, 401, "invalid_api_key")
    assert key not in answer.text


async def test_a_request_with_a_revoked_key_is_401(gateway: Proc, market: Market) -> None:
    key_id, key = market.new_key(gateway, "to-revoke")
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        assert (await client.post("/chat/completions", json=chat())).status_code == 200
        assert market.revoke(gateway, key_id).status_code == 204
        answer = await client.post("/chat/completions", json=chat())
    assert_openai_error(answer, 401, "invalid_api_key")


async def test_the_models_list_needs_a_key_too(gateway: Proc) -> None:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
        answer = await client.get("/models")
    assert_openai_error(answer, 401, "missing_api_key")


# ---- 404, 405, 413 --------------------------------------------------------------------------------


async def test_an_unlisted_model_is_404_model_not_found(http: httpx.AsyncClient) -> None:
    answer = await http.post("/chat/completions", json=chat("no-such-model-anywhere"))
    assert_openai_error(answer, 404, "model_not_found", param="model")


async def test_an_unlisted_embeddings_model_is_404_model_not_found(http: httpx.AsyncClient) -> None:
    answer = await http.post("/embeddings", json={"model": "text-embedding-9", "input": "x"})
    assert_openai_error(answer, 404, "model_not_found", param="model")


async def test_an_unknown_path_is_an_openai_shaped_404(http: httpx.AsyncClient) -> None:
    answer = await http.post("/completions-of-the-future", json=chat())
    assert_openai_error(answer, 404, "not_found")


async def test_a_wrong_method_is_an_openai_shaped_405(http: httpx.AsyncClient) -> None:
    answer = await http.get("/chat/completions")
    assert_openai_error(answer, 405, "method_not_allowed")


def _big_body() -> bytes:
    return httpx.Request("POST", "/", json=chat(messages=[{"role": "user", "content": "x" * 5000}])).content


async def test_a_body_over_the_limit_is_413(strict: httpx.AsyncClient) -> None:
    answer = await strict.post("/chat/completions", content=_big_body(), headers={"content-type": "application/json"})
    assert_openai_error(answer, 413, "request_too_large")


async def test_a_chunked_body_over_the_limit_is_413(strict: httpx.AsyncClient) -> None:
    body = _big_body()

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: the gateway must count
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    answer = await strict.post("/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_openai_error(answer, 413, "request_too_large")


async def test_a_body_under_the_limit_is_served_by_the_strict_gateway(strict: httpx.AsyncClient) -> None:
    answer = await strict.post("/chat/completions", json=chat())
    assert answer.status_code == 200, answer.text


# ---- 502, 504 -------------------------------------------------------------------------------------


async def test_an_upstream_500_is_502_upstream_error(http: httpx.AsyncClient, fakes: Fakes) -> None:
    before = fakes.failing.stats()["requests"]
    answer = await http.post("/chat/completions", json=chat("failing-model"))
    assert_openai_error(answer, 502, "upstream_error")
    assert fakes.failing.stats()["requests"] == before + 1
    assert "Injected" not in answer.text, "the provider's own error text is not relayed for a 5xx"


async def test_an_upstream_500_on_a_stream_is_a_502_json_error_not_a_stream(http: httpx.AsyncClient) -> None:
    answer = await http.post("/chat/completions", json=chat("failing-model", stream=True))
    assert_openai_error(answer, 502, "upstream_error")


async def test_a_provider_at_capacity_is_429_with_its_retry_after(http: httpx.AsyncClient, fakes: Fakes) -> None:
    answer = await http.post("/chat/completions", json=chat("busy-model"))
    assert_openai_error(answer, 429, "rate_limit_exceeded")
    assert answer.headers["retry-after"] == "7"


async def test_a_provider_that_asked_to_wait_is_left_alone_until_then(http: httpx.AsyncClient, fakes: Fakes) -> None:
    await http.post("/chat/completions", json=chat("busy-model"))
    before = fakes.busy.stats()["requests"]
    answer = await http.post("/chat/completions", json=chat("busy-model"))
    assert_openai_error(answer, 429, "rate_limit_exceeded")
    assert 1 <= int(answer.headers["retry-after"]) <= 7
    assert fakes.busy.stats()["requests"] == before


async def test_an_upstream_that_refuses_connections_is_502_upstream_error(http: httpx.AsyncClient) -> None:
    answer = await http.post("/chat/completions", json=chat("dead-model"))
    assert_openai_error(answer, 502, "upstream_error")


async def test_an_upstream_slower_than_the_read_timeout_is_504(strict: httpx.AsyncClient) -> None:
    started = time.monotonic()
    answer = await strict.post("/chat/completions", json=chat("sleepy-model"))
    elapsed = time.monotonic() - started
    assert_openai_error(answer, 504, "upstream_timeout")
    assert elapsed < 2.5, f"504 after {elapsed:.2f}s: the 0.5 s read timeout was not applied"


async def test_a_stream_from_an_upstream_slower_than_the_read_timeout_is_504(strict: httpx.AsyncClient) -> None:
    answer = await strict.post("/chat/completions", json=chat("sleepy-model", stream=True))
    assert_openai_error(answer, 504, "upstream_timeout")


# ---- request ids ----------------------------------------------------------------------------------


async def test_every_response_carries_an_x_request_id(gateway: Proc, http: httpx.AsyncClient) -> None:
    answers = [
        await http.post("/chat/completions", json=chat()),
        await http.post("/chat/completions", json=chat("no-such-model")),
        await http.post("/chat/completions", content=b"{"),
        await http.get("/models"),
        await http.get(gateway.url + "/healthz"),
        await http.get(gateway.url + "/nowhere"),
    ]
    async with http.stream("POST", "/chat/completions", json=chat(stream=True)) as streamed:
        answers.append(streamed)
    ids = [a.headers.get("x-request-id") for a in answers]
    assert all(ids), ids
    assert len(set(ids)) == len(ids), "each request gets its own id"


async def test_a_sane_incoming_request_id_is_echoed(http: httpx.AsyncClient) -> None:
    rid = request_id()
    answer = await http.post("/chat/completions", json=chat(), headers={"x-request-id": rid})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == rid


async def test_a_sane_incoming_request_id_is_echoed_on_errors_too(http: httpx.AsyncClient) -> None:
    rid = request_id()
    answer = await http.post("/chat/completions", json=chat("no-such-model"), headers={"x-request-id": rid})
    assert_openai_error(answer, 404, "model_not_found", param="model")
    assert answer.headers["x-request-id"] == rid


@pytest.mark.parametrize("bad", ["short", "has spaces in it", "x" * 200, "semi;colon;here"])
async def test_an_insane_incoming_request_id_is_replaced(http: httpx.AsyncClient, bad: str) -> None:
    answer = await http.post("/chat/completions", json=chat(), headers={"x-request-id": bad})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] not in ("", bad)
    assert answer.headers.get_list("x-request-id") == [answer.headers["x-request-id"]]
