"""A buyer who leaves mid-stream: the relay reads on (bounded) for the provider's usage, sends nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from aichat_gateway.proxy.relay import ClientWatch, RelayStream, StreamMeter, StreamResult, UsageDrain
from aichat_gateway.proxy.sse import Usage

pytestmark = pytest.mark.timeout(10)


def frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def content(text: str, finish: str | None = None) -> bytes:
    return frame(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        }
    )


# What a reasoning model bills: a few visible words, thousands of reasoning tokens, reported last.
USAGE = frame(
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 5000,
            "total_tokens": 5012,
            "completion_tokens_details": {"reasoning_tokens": 4994},
        },
    }
)
DONE = b"data: [DONE]\n\n"
ANSWER = [content("Hello"), content(" there"), content("!", "stop")]


class Wire:
    """The buyer: records what reached it; leaves once it has received `leave_after` body messages."""

    def __init__(self, leave_after: int) -> None:
        self.bodies: list[bytes] = []
        self.left_at: int | None = None  # how many bodies it had when it left
        self._gone = asyncio.Event()
        self._leave_after = leave_after

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            self.bodies.append(message["body"])
            if len(self.bodies) >= self._leave_after and self.left_at is None:
                self.left_at = len(self.bodies)
                self._gone.set()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}


class Provider:
    """An upstream body, one frame per read, yielding to the loop between reads like a socket does;
    `hang_after` frames in, it waits forever (a provider that goes quiet)."""

    def __init__(self, frames: list[bytes], hang_after: int | None = None) -> None:
        self.frames = frames
        self.hang_after = hang_after
        self.read = 0
        self.closed = 0

    async def parts(self) -> AsyncIterator[bytes]:
        for frame_bytes in self.frames:
            if self.read == self.hang_after:
                await asyncio.Event().wait()
            self.read += 1
            await asyncio.sleep(0)  # a scheduling point, as a real read is: the watch runs here
            yield frame_bytes

    async def aclose(self) -> None:
        self.closed += 1


async def relay(provider: Provider, wire: Wire, drain: UsageDrain) -> StreamResult:
    results: list[StreamResult] = []

    async def on_done(result: StreamResult) -> None:
        results.append(result)

    parts = provider.parts()
    first = await anext(parts)
    response = RelayStream(
        provider,  # type: ignore[arg-type]
        first,
        parts,
        StreamMeter(forward_usage=False),
        ClientWatch(wire.receive),  # type: ignore[arg-type]
        on_done,
        {},
        drain=drain,
    )
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await response(scope, wire.receive, wire.send)
    [result] = results
    return result


DRAIN = UsageDrain(seconds=5.0, max_bytes=64 * 1024)


async def test_a_buyer_who_leaves_after_the_finish_reason_is_charged_the_usage_the_provider_reports_after_it() -> None:
    provider = Provider([*ANSWER, USAGE, DONE])
    wire = Wire(leave_after=3)  # has the whole visible answer, leaves before the usage chunk
    result = await relay(provider, wire, DRAIN)
    assert result.meter.usage == Usage(prompt_tokens=12, completion_tokens=5000)
    assert result.outcome == "client_disconnected"
    assert provider.read == 4, "read up to the usage chunk, no further"
    assert provider.closed >= 1


async def test_a_buyer_who_leaves_mid_answer_gets_nothing_more_while_the_provider_is_read_for_its_usage() -> None:
    provider = Provider([*ANSWER, USAGE, DONE])
    wire = Wire(leave_after=1)
    result = await relay(provider, wire, DRAIN)
    assert len(wire.bodies) == wire.left_at == 1
    assert result.meter.usage == Usage(prompt_tokens=12, completion_tokens=5000)
    assert "".join(result.meter.text_parts) == "Hello there!", "the text read after leaving is kept for counting"


async def test_a_provider_that_goes_quiet_after_the_buyer_left_is_closed_after_the_drain_time() -> None:
    provider = Provider([*ANSWER, USAGE, DONE], hang_after=2)
    wire = Wire(leave_after=1)
    result = await asyncio.wait_for(relay(provider, wire, UsageDrain(seconds=0.05, max_bytes=64 * 1024)), 5)
    assert result.outcome == "client_disconnected"
    assert result.meter.usage is None
    assert provider.closed >= 1


async def test_a_provider_that_sends_more_than_the_drain_bytes_after_the_buyer_left_is_read_no_further() -> None:
    long_answer = [content("word ") for _ in range(50)]
    provider = Provider([*long_answer, USAGE, DONE])
    per_frame = len(long_answer[0])
    wire = Wire(leave_after=1)
    result = await relay(provider, wire, UsageDrain(seconds=5.0, max_bytes=10 * per_frame))
    assert provider.read == 1 + 11, "the first frame, then just over the byte bound"
    assert result.meter.usage is None
    assert result.outcome == "client_disconnected"


async def test_with_no_drain_a_buyer_leaving_ends_the_providers_request_at_once() -> None:
    provider = Provider([*ANSWER, USAGE, DONE], hang_after=1)
    wire = Wire(leave_after=1)
    result = await relay(provider, wire, UsageDrain())
    assert result.outcome == "client_disconnected"
    assert provider.read == 1 and result.meter.usage is None


async def test_a_buyer_who_stays_to_the_end_is_unaffected_by_the_drain() -> None:
    provider = Provider([*ANSWER, USAGE, DONE])
    wire = Wire(leave_after=99)
    result = await relay(provider, wire, DRAIN)
    assert result.outcome == "ok"
    assert b"".join(wire.bodies).endswith(DONE)
