"""`relay.StreamMeter`: the sans-I/O part of the stream relay (usage forwarded or withheld, text kept)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from aichat_gateway.proxy.adapters.anthropic import AnthropicStreamTranslator
from aichat_gateway.proxy.adapters.base import StreamTranslator
from aichat_gateway.proxy.relay import ClientWatch, RelayStream, StreamMeter, StreamResult, error_event
from aichat_gateway.proxy.sse import SSEParser, Usage

WORDS = ["Hello", " there", ",", " friend"]


def frame(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    return frame(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            "usage": None,
            **extra,
        }
    )


USAGE_FRAME = frame(
    {
        "id": "c1",
        "object": "chat.completion.chunk",
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
    }
)
DONE = b"data: [DONE]\n\n"
CONTENT_FRAMES = [
    chunk({"role": "assistant", "content": ""}),
    *[chunk({"content": w}) for w in WORDS[:-1]],
    chunk({"content": WORDS[-1]}, "stop"),
]
STREAM = b"".join([*CONTENT_FRAMES, USAGE_FRAME, DONE])


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def relay(meter: StreamMeter, parts: list[bytes]) -> bytes:
    return b"".join(meter.feed(part) for part in parts)


def datas(raw: bytes) -> list[str]:
    parser = SSEParser()
    return [event.data for event in parser.feed(raw)]


SIZES = [1, 3, 17, 64, len(STREAM)]


@pytest.mark.parametrize("size", SIZES)
def test_with_usage_wanted_the_providers_bytes_pass_through_untouched(size: int) -> None:
    meter = StreamMeter(forward_usage=True)
    assert relay(meter, split(STREAM, size)) == STREAM
    assert meter.usage == Usage(prompt_tokens=11, completion_tokens=4)


@pytest.mark.parametrize("size", SIZES)
def test_without_usage_wanted_the_usage_chunk_is_withheld_and_everything_else_delivered(size: int) -> None:
    meter = StreamMeter(forward_usage=False)
    out = relay(meter, split(STREAM, size))
    delivered = datas(out)
    assert delivered == [*datas(STREAM)[:-2], "[DONE]"]
    assert all('"usage":{' not in d for d in delivered)
    assert meter.usage == Usage(prompt_tokens=11, completion_tokens=4), "withheld, but still read"


def test_without_usage_wanted_whole_events_pass_through_byte_for_byte() -> None:
    meter = StreamMeter(forward_usage=False)
    for frame_bytes in CONTENT_FRAMES:
        assert meter.feed(frame_bytes) == frame_bytes


@pytest.mark.parametrize("forward_usage", [True, False])
@pytest.mark.parametrize("size", SIZES)
def test_the_delivered_text_is_collected_for_counting(forward_usage: bool, size: int) -> None:
    meter = StreamMeter(forward_usage=forward_usage)
    relay(meter, split(STREAM, size))
    assert "".join(meter.text_parts) == "".join(WORDS)


def test_tool_call_names_and_arguments_count_as_delivered_text() -> None:
    meter = StreamMeter(forward_usage=False)
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    relay(
        meter,
        [
            chunk({"role": "assistant", "tool_calls": [call]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Paris"}'}}]}),
            chunk({}, "tool_calls"),
            DONE,
        ],
    )
    assert "".join(meter.text_parts) == 'get_weather{"city": "Paris"}'


def test_done_is_seen_only_once_it_arrives() -> None:
    meter = StreamMeter(forward_usage=False)
    relay(meter, [*CONTENT_FRAMES, USAGE_FRAME])
    assert meter.saw_done is False
    assert meter.feed(b"data: [DO") == b""
    assert meter.saw_done is False
    assert meter.feed(b"NE]\n\n") == DONE
    assert meter.saw_done is True


def test_a_stream_without_usage_leaves_usage_unknown() -> None:
    meter = StreamMeter(forward_usage=True)
    relay(meter, [*CONTENT_FRAMES, DONE])
    assert meter.usage is None
    assert meter.saw_done is True


def test_usage_inside_a_content_chunk_is_read_and_the_content_still_delivered() -> None:
    """Some providers put usage on the last content chunk instead of a separate one."""
    last = chunk({"content": "end"}, "stop", usage={"prompt_tokens": 2, "completion_tokens": 1})
    last = last.replace(b'"usage":null,', b"")
    meter = StreamMeter(forward_usage=False)
    out = meter.feed(last)
    assert orjson.loads(datas(out)[0])["choices"][0]["delta"]["content"] == "end"
    assert meter.usage == Usage(prompt_tokens=2, completion_tokens=1)
    assert meter.text_parts == ["end"]


def test_a_half_received_event_is_held_back_until_it_is_complete() -> None:
    meter = StreamMeter(forward_usage=False)
    first, second = CONTENT_FRAMES[1][:10], CONTENT_FRAMES[1][10:]
    assert meter.feed(first) == b""
    assert datas(meter.feed(second)) == datas(CONTENT_FRAMES[1])


def test_named_events_and_multi_line_data_survive_re_encoding() -> None:
    meter = StreamMeter(forward_usage=False)
    raw = b"event: ping\ndata: a\ndata: b\n\n" + USAGE_FRAME
    out = meter.feed(raw)
    [event] = SSEParser().feed(out)
    assert (event.event, event.data) == ("ping", "a\nb")


def test_crlf_framed_streams_are_understood() -> None:
    meter = StreamMeter(forward_usage=False)
    out = meter.feed(STREAM.replace(b"\n", b"\r\n"))
    assert datas(out) == [*datas(STREAM)[:-2], "[DONE]"]
    assert meter.usage is not None and "".join(meter.text_parts) == "".join(WORDS)


def test_the_error_event_is_one_openai_shaped_sse_event() -> None:
    raw = error_event("it broke", "upstream_error")
    [event] = SSEParser().feed(raw)
    assert orjson.loads(event.data) == {
        "error": {"message": "it broke", "type": "api_error", "param": None, "code": "upstream_error"}
    }


# ---- RelayStream: the thin I/O shell, driven with in-memory ASGI callables ------------------------------


class Upstream:
    """Stands in for the provider's httpx.Response: only `aclose` is used by the relay."""

    def __init__(self) -> None:
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


class Wire:
    """The buyer's side: records what was sent; `receive` blocks until `leave()`."""

    def __init__(self, leave_after_bodies: int | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self._gone = asyncio.Event()
        self._leave_after = leave_after_bodies

    def leave(self) -> None:
        self._gone.set()

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        bodies = [m for m in self.messages if m["type"] == "http.response.body" and m.get("body")]
        if self._leave_after is not None and len(bodies) >= self._leave_after:
            self.leave()

    async def receive(self) -> dict[str, Any]:
        await self._gone.wait()
        return {"type": "http.disconnect"}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")


async def run_relay(
    parts: AsyncIterator[bytes], first: bytes, wire: Wire, forward_usage: bool = False
) -> tuple[list[StreamResult], Upstream]:
    results: list[StreamResult] = []
    upstream = Upstream()

    async def on_done(result: StreamResult) -> None:
        results.append(result)

    response = RelayStream(
        upstream,  # type: ignore[arg-type]
        first,
        parts,
        StreamMeter(forward_usage),
        ClientWatch(wire.receive),  # type: ignore[arg-type]
        on_done,
        {"x-gateway-listing": "lst_1"},
    )
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await asyncio.wait_for(response(scope, wire.receive, wire.send), timeout=5)
    return results, upstream


async def from_list(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_a_whole_stream_is_relayed_and_finished_once_with_outcome_ok() -> None:
    wire = Wire()
    results, upstream = await run_relay(from_list([*CONTENT_FRAMES[1:], USAGE_FRAME, DONE]), CONTENT_FRAMES[0], wire)
    start = wire.messages[0]
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert any(name == b"content-type" and value.startswith(b"text/event-stream") for name, value in start["headers"])
    assert (b"x-gateway-listing", b"lst_1") in start["headers"]
    assert datas(wire.body) == [*datas(STREAM)[:-2], "[DONE]"]
    [result] = results
    assert result.outcome == "ok" and result.meter.saw_done and result.ttft_seconds is not None
    assert upstream.closed >= 1


async def test_the_answers_last_event_and_the_end_of_the_body_leave_in_one_message() -> None:
    wire = Wire()
    await run_relay(from_list([CONTENT_FRAMES[1], DONE]), CONTENT_FRAMES[0], wire)
    assert wire.messages[-1] == {"type": "http.response.body", "body": DONE, "more_body": False}
    assert [m.get("more_body") for m in wire.messages[1:]] == [True, True, False]


class Provider:
    """An upstream body that goes on after its [DONE]: records how far the relay read it."""

    def __init__(self, after_done: list[bytes], fail_after: bool = False) -> None:
        self.after_done = after_done
        self.fail_after = fail_after
        self.read_to_end = False
        self.chunks_read = 0

    async def parts(self) -> AsyncIterator[bytes]:
        yield DONE
        for part in self.after_done:
            self.chunks_read += 1
            yield part
        if self.fail_after:
            raise httpx.ReadError("connection reset")
        self.read_to_end = True


async def test_after_done_the_providers_body_is_read_to_its_end_and_nothing_more_is_relayed() -> None:
    provider = Provider(after_done=[b": keep-alive\n\n", CONTENT_FRAMES[2]])
    wire = Wire()
    results, _ = await run_relay(provider.parts(), CONTENT_FRAMES[0], wire)
    assert provider.read_to_end
    assert datas(wire.body) == [datas(CONTENT_FRAMES[0])[0], "[DONE]"]
    assert [r.outcome for r in results] == ["ok"]


async def test_a_read_error_after_done_leaves_the_answer_complete_and_the_outcome_ok() -> None:
    provider = Provider(after_done=[b": keep-alive\n\n"], fail_after=True)
    wire = Wire()
    results, _ = await run_relay(provider.parts(), CONTENT_FRAMES[0], wire)
    assert [r.outcome for r in results] == ["ok"]
    assert wire.messages[-1]["more_body"] is False and b"error" not in wire.body


async def test_a_provider_that_keeps_sending_after_done_is_read_no_further_than_the_drain_limit() -> None:
    provider = Provider(after_done=[b":" + b"x" * 16382 + b"\n"] * 100)
    results, upstream = await run_relay(provider.parts(), CONTENT_FRAMES[0], Wire())
    assert provider.chunks_read == 64 * 1024 // 16384 + 1 and not provider.read_to_end
    assert [r.outcome for r in results] == ["ok"] and upstream.closed >= 1


async def test_a_buyer_whose_connection_reports_gone_once_the_body_ended_still_counts_as_served() -> None:
    # uvicorn answers every receive() after the response's end with http.disconnect.
    class EndingWire(Wire):
        async def send(self, message: dict[str, Any]) -> None:
            await super().send(message)
            if message.get("more_body") is False:
                self.leave()
                await asyncio.sleep(0)  # the watch sees the "disconnect" before the relay goes on

    provider = Provider(after_done=[b": keep-alive\n\n"])
    results, _ = await run_relay(provider.parts(), CONTENT_FRAMES[0], EndingWire())
    assert [r.outcome for r in results] == ["ok"]
    assert provider.read_to_end


async def test_a_buyer_who_leaves_ends_the_relay_and_it_finishes_once_as_client_disconnected() -> None:
    provider_waits = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        yield CONTENT_FRAMES[1]
        await provider_waits.wait()  # the provider is slow; the buyer leaves meanwhile
        yield CONTENT_FRAMES[2]

    wire = Wire(leave_after_bodies=2)
    results, upstream = await run_relay(endless(), CONTENT_FRAMES[0], wire)
    [result] = results
    assert result.outcome == "client_disconnected"
    assert "".join(result.meter.text_parts) == WORDS[0]
    assert upstream.closed >= 1


async def test_an_upstream_failure_mid_stream_ends_with_an_error_event_and_outcome_upstream_error() -> None:
    async def breaking() -> AsyncIterator[bytes]:
        yield CONTENT_FRAMES[1]
        raise httpx.ReadError("connection reset")

    wire = Wire()
    results, upstream = await run_relay(breaking(), CONTENT_FRAMES[0], wire)
    events = datas(wire.body)
    assert orjson.loads(events[-1])["error"]["code"] == "upstream_error"
    assert wire.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    [result] = results
    assert result.outcome == "upstream_error"
    assert upstream.closed >= 1


@pytest.mark.parametrize("size", SIZES)
def test_the_usage_chunk_the_buyer_asked_for_carries_the_answers_cost_once(size: int) -> None:
    meter = StreamMeter(forward_usage=True, cost_of=lambda prompt, completion: f"0.{prompt:03d}{completion:03d}")
    delivered = datas(relay(meter, split(STREAM, size)))
    assert delivered[:-2] == datas(STREAM)[:-2]  # everything else exactly as the provider sent it
    usage = orjson.loads(delivered[-2])["usage"]
    assert usage == {"cost": 0.011004, "prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    assert delivered[-1] == "[DONE]"


def test_a_withheld_usage_chunk_is_not_priced_into_the_stream() -> None:
    meter = StreamMeter(forward_usage=False, cost_of=lambda prompt, completion: "1.000000")
    assert b'"cost"' not in relay(meter, [STREAM])


class StepClock:
    """Each reading is `step` seconds after the previous one."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def test_a_long_stream_renews_its_leases_between_chunks() -> None:
    renewals: list[float] = []
    clock = StepClock(10.0)  # every clock reading is 10 "seconds" later

    async def renew() -> None:
        renewals.append(clock.now)

    wire = Wire()
    response = RelayStream(
        Upstream(),  # type: ignore[arg-type]
        CONTENT_FRAMES[0],
        from_list([*CONTENT_FRAMES[1:], USAGE_FRAME, DONE]),
        StreamMeter(False),
        ClientWatch(wire.receive),  # type: ignore[arg-type]
        lambda result: asyncio.sleep(0),
        {},
        clock,
        renew=renew,
        renew_every=40.0,
    )
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await asyncio.wait_for(response(scope, wire.receive, wire.send), timeout=5)
    assert len(renewals) >= 2  # ~7 chunks over ~140 "seconds" of clock readings
    assert all(b - a >= 40.0 for a, b in itertools.pairwise(renewals))


async def test_a_short_stream_never_renews() -> None:
    renewals: list[int] = []

    async def renew() -> None:
        renewals.append(1)

    wire = Wire()
    response = RelayStream(
        Upstream(),  # type: ignore[arg-type]
        CONTENT_FRAMES[0],
        from_list([*CONTENT_FRAMES[1:], DONE]),
        StreamMeter(False),
        ClientWatch(wire.receive),  # type: ignore[arg-type]
        lambda result: asyncio.sleep(0),
        {},
        StepClock(0.001),
        renew=renew,
        renew_every=40.0,
    )
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await asyncio.wait_for(response(scope, wire.receive, wire.send), timeout=5)
    assert renewals == []


# ---- streams that end badly: no [DONE], a trickle, the provider's own error event --------------------


async def relay_with(
    translator: StreamTranslator, parts: list[bytes], clock: StepClock, stall_after: float | None = None
) -> tuple[StreamResult, Wire]:
    results: list[StreamResult] = []
    wire = Wire()

    async def on_done(result: StreamResult) -> None:
        results.append(result)

    response = RelayStream(
        Upstream(),  # type: ignore[arg-type]
        parts[0],
        from_list(parts[1:]),
        translator,
        ClientWatch(wire.receive),  # type: ignore[arg-type]
        on_done,
        {},
        clock,
        stall_after=stall_after,
    )
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}
    await asyncio.wait_for(response(scope, wire.receive, wire.send), timeout=5)
    [result] = results
    return result, wire


def error_codes(body: bytes) -> list[str]:
    return [orjson.loads(d)["error"]["code"] for d in datas(body) if d.startswith('{"error"')]


async def test_a_stream_that_ends_without_done_ends_with_an_error_event_and_outcome_upstream_error() -> None:
    result, wire = await relay_with(StreamMeter(False), CONTENT_FRAMES[:3], StepClock(0.001))
    assert result.outcome == "upstream_error"
    assert datas(wire.body)[:-1] == datas(b"".join(CONTENT_FRAMES[:3]))
    assert error_codes(wire.body) == ["upstream_error"]
    assert "ended before the answer was complete" in datas(wire.body)[-1]
    assert wire.messages[-1] == {"type": "http.response.body", "body": b"", "more_body": False}


async def test_a_trickle_that_forwards_nothing_for_stall_after_seconds_is_cut_with_an_error_event() -> None:
    """One byte per read, each read 0.3 "seconds" apart: no read times out, but the first event
    would take ~60 s; the relay gives up once 1 s passed with nothing to forward."""
    result, wire = await relay_with(StreamMeter(False), split(STREAM, 1), StepClock(0.3), stall_after=1.0)
    assert result.outcome == "upstream_error"
    assert datas(wire.body) == [datas(wire.body)[-1]]  # nothing of the half-received event went out
    assert "stalled" in datas(wire.body)[-1]
    assert error_codes(wire.body) == ["upstream_error"]


async def test_a_slow_stream_that_completes_an_event_within_stall_after_is_relayed_whole() -> None:
    parts = [*CONTENT_FRAMES, USAGE_FRAME, DONE]
    result, wire = await relay_with(StreamMeter(False), parts, StepClock(0.9), stall_after=1.0)
    assert result.outcome == "ok"
    assert datas(wire.body)[-1] == "[DONE]" and error_codes(wire.body) == []


async def test_a_providers_own_error_event_is_relayed_once_and_the_outcome_is_upstream_error() -> None:
    translator = AnthropicStreamTranslator("claude-buyer", False, created=1234)
    start = {"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 5, "output_tokens": 1}}}
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    parts = [
        b"event: message_start\ndata: " + orjson.dumps(start) + b"\n\n",
        b"event: error\ndata: " + orjson.dumps(error) + b"\n\n",
    ]
    result, wire = await relay_with(translator, parts, StepClock(0.001))
    assert result.outcome == "upstream_error"
    assert error_codes(wire.body) == ["overloaded_error"]
