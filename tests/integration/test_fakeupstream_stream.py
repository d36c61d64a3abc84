"""The fake upstream over real sockets (uvicorn on 127.0.0.1): streams through the openai SDK, disconnects,
and the multi-worker `serve` path."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import uvicorn
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from aichat_gateway.fakeupstream import FakeUpstreamConfig, create_app

pytestmark = pytest.mark.integration

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object"}},
}


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def fake_url() -> Iterator[str]:
    """One uvicorn server in a background thread for the module, on a socket bound before it starts."""
    sock = _bound_socket()
    config = uvicorn.Config(
        create_app(FakeUpstreamConfig()), loop="uvloop", http="httptools", log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "fake upstream did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
async def http(fake_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake_url, timeout=10) as client:
        await client.post("/_fake/reset")
        yield client


@pytest.fixture
async def sdk(fake_url: str, http: httpx.AsyncClient) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=fake_url + "/v1", api_key="sk-test-0000", max_retries=0) as client:
        yield client


async def wait_for_stats(http: httpx.AsyncClient, key: str, value: int, within: float = 5.0) -> dict[str, int]:
    """Poll /_fake/stats until stats[key] == value; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        stats: dict[str, int] = (await http.get("/_fake/stats")).json()
        if stats[key] == value:
            return stats
        assert time.monotonic() < deadline, f"{key} stayed {stats[key]}, wanted {value}: {stats}"
        await asyncio.sleep(0.02)


async def test_the_sdk_reads_a_stream_of_sixteen_words(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
    text = "".join(p for p in pieces if p)
    assert text.split() == ["fake", "reply", *[f"word{i}" for i in range(1, 15)]]


async def test_include_usage_gives_the_sdk_a_final_usage_chunk(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 16
    assert last.usage.prompt_tokens == len("hello there") // 4 + 1


async def test_the_sdk_sees_a_tool_call_in_a_non_streamed_answer(sdk: AsyncOpenAI) -> None:
    answer = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER_TOOL])
    assert answer.choices[0].finish_reason == "tool_calls"
    calls = answer.choices[0].message.tool_calls
    assert calls is not None
    assert calls[0].function.name == "get_weather"  # type: ignore[union-attr]


async def test_the_sdk_decodes_base64_embeddings(sdk: AsyncOpenAI) -> None:
    answer = await sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert [len(d.embedding) for d in answer.data] == [8, 8]


async def test_a_completed_stream_is_counted_as_completed(sdk: AsyncOpenAI, http: httpx.AsyncClient) -> None:
    stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    async for _ in stream:
        pass
    stats = await wait_for_stats(http, "streams_completed", 1)
    assert (stats["streams_started"], stats["streams_cancelled"], stats["in_flight"]) == (1, 0, 0)


async def test_closing_the_connection_mid_stream_counts_a_cancelled_stream(
    sdk: AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    slow = {"x-fake-chunks": "50", "x-fake-chunk-interval-ms": "200"}  # ten seconds if read to the end
    stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_headers=slow)
    received = 0
    async for _ in stream:
        received += 1
        if received == 2:
            break
    started = time.monotonic()
    await stream.close()
    stats = await wait_for_stats(http, "streams_cancelled", 1, within=3.0)
    assert time.monotonic() - started < 3.0
    assert (stats["streams_started"], stats["streams_completed"]) == (1, 0)
    await wait_for_stats(http, "in_flight", 0)


async def test_a_client_leaving_during_the_latency_starts_no_stream(http: httpx.AsyncClient) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/v1/chat/completions", json=body, headers={"x-fake-latency-ms": "5000"}, timeout=0.2)
    stats = await wait_for_stats(http, "in_flight", 0, within=3.0)
    assert (stats["streams_started"], stats["streams_cancelled"]) == (0, 0)


def _free_port() -> int:
    with _bound_socket() as sock:
        return int(sock.getsockname()[1])


async def test_serve_with_two_workers_passes_the_config_to_every_worker() -> None:
    port = _free_port()
    command = [sys.executable, "-m", "aichat_gateway.fakeupstream", "--port", str(port), "--workers", "2"]
    process = await asyncio.create_subprocess_exec(*command, "--chunks", "3", env=os.environ.copy())
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "two-worker fake upstream did not start"
                await asyncio.sleep(0.05)
            body = {"model": "m", "messages": MESSAGES}
            for _ in range(8):  # new connections, so both workers are likely to answer some
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as fresh:
                    answer = (await fresh.post("/v1/chat/completions", json=body)).json()
                assert answer["choices"][0]["message"]["content"] == "fake reply word1"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)
