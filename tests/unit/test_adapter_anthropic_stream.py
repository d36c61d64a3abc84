"""Anthropic SSE -> OpenAI chat.completion.chunk SSE, incrementally and independent of byte boundaries."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from aichat_gateway.fakeupstream import FakeUpstreamConfig, create_app
from aichat_gateway.proxy.adapters.anthropic import AnthropicAdapter, AnthropicStreamTranslator
from aichat_gateway.proxy.relay import error_event
from aichat_gateway.proxy.sse import Usage


def event(name: str, **payload: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **payload}) + b"\n\n"


START = event(
    "message_start",
    message={
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_read_input_tokens": 100, "output_tokens": 1},
    },
)
TEXT_BLOCK = event("content_block_start", index=0, content_block={"type": "text", "text": ""})
PING = event("ping")


def text_delta(value: str, index: int = 0) -> bytes:
    return event("content_block_delta", index=index, delta={"type": "text_delta", "text": value})


def json_delta(value: str, index: int) -> bytes:
    return event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": value})


def tool_block(index: int, call_id: str, name: str) -> bytes:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    return event("content_block_start", index=index, content_block=block)


def finish(reason: str = "end_turn", output_tokens: int = 15) -> bytes:
    delta = {"stop_reason": reason, "stop_sequence": None}
    return event("message_delta", delta=delta, usage={"output_tokens": output_tokens})


STOP = event("message_stop")
TEXT_STREAM = b"".join(
    [
        START,
        TEXT_BLOCK,
        PING,
        text_delta("Hello"),
        text_delta(" there"),
        event("content_block_stop", index=0),
        finish(),
        STOP,
    ]
)
TOOL_STREAM = b"".join(
    [
        START,
        TEXT_BLOCK,
        text_delta("Checking."),
        event("content_block_stop", index=0),
        tool_block(1, "toolu_a", "get_weather"),
        json_delta("", 1),
        json_delta('{"city": ', 1),
        json_delta('"Oslo"}', 1),
        event("content_block_stop", index=1),
        tool_block(2, "toolu_b", "get_time"),
        json_delta("{}", 2),
        event("content_block_stop", index=2),
        finish("tool_use", 40),
        STOP,
    ]
)


def translator(include_usage: bool = False) -> AnthropicStreamTranslator:
    return AnthropicStreamTranslator("claude-buyer", include_usage, created=1234)


def frames(out: bytes) -> list[Any]:
    """The data of each SSE event the translator wrote, parsed; `[DONE]` stays a string."""
    assert out.endswith(b"\n\n") or not out
    payloads = [f.removeprefix(b"data: ") for f in out.split(b"\n\n") if f]
    return [p.decode() if p == b"[DONE]" else orjson.loads(p) for p in payloads]


def translate(stream: bytes, include_usage: bool = False) -> tuple[list[Any], AnthropicStreamTranslator]:
    t = translator(include_usage)
    return frames(t.feed(stream)), t


def deltas(chunks: list[Any]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict) and c.get("choices")]


def test_the_first_chunk_carries_the_assistant_role_and_the_message_id() -> None:
    [first] = frames(translator().feed(START))
    assert first == {
        "id": "chatcmpl-msg_9",
        "object": "chat.completion.chunk",
        "created": 1234,
        "model": "claude-buyer",
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ],
    }


def test_text_deltas_become_content_deltas_then_a_finish_chunk_and_done() -> None:
    chunks, _ = translate(TEXT_STREAM)
    assert deltas(chunks) == [{"role": "assistant", "content": ""}, {"content": "Hello"}, {"content": " there"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "stop"]
    assert chunks[-1] == "[DONE]"


def test_without_include_usage_no_chunk_mentions_usage() -> None:
    chunks, _ = translate(TEXT_STREAM)
    assert all("usage" not in c for c in chunks[:-1])


def test_with_include_usage_a_usage_chunk_without_choices_precedes_done() -> None:
    chunks, _ = translate(TEXT_STREAM, include_usage=True)
    *content, usage_chunk, done = chunks
    assert done == "[DONE]"
    assert all(c["usage"] is None for c in content)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 125,
        "completion_tokens": 15,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_usage_combines_input_from_message_start_with_output_from_message_delta() -> None:
    _, t = translate(TEXT_STREAM)
    assert t.usage == Usage(prompt_tokens=125, completion_tokens=15)


def test_input_counts_in_message_delta_override_those_of_message_start() -> None:
    delta = event(
        "message_delta",
        delta={"stop_reason": "end_turn"},
        usage={"input_tokens": 30, "cache_read_input_tokens": 0, "output_tokens": 2},
    )
    _, t = translate(START + delta)
    assert t.usage == Usage(30, 2)


def test_usage_is_unknown_until_message_delta_reports_it() -> None:
    _, t = translate(START + TEXT_BLOCK + text_delta("Hi"))
    assert t.usage is None


def test_tool_use_blocks_become_tool_call_deltas_numbered_per_tool() -> None:
    chunks, _ = translate(TOOL_STREAM)
    calls = [d["tool_calls"][0] for d in deltas(chunks) if "tool_calls" in d]
    assert calls == [
        {"index": 0, "id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}},
        {"index": 0, "function": {"arguments": '{"city": '}},
        {"index": 0, "function": {"arguments": '"Oslo"}'}},
        {"index": 1, "id": "toolu_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
        {"index": 1, "function": {"arguments": "{}"}},
    ]


def test_a_tool_use_stream_finishes_with_tool_calls() -> None:
    chunks, _ = translate(TOOL_STREAM)
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}


def test_max_tokens_finishes_with_length() -> None:
    chunks, _ = translate(START + finish("max_tokens") + STOP)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


def test_the_delivered_text_includes_content_tool_names_and_arguments() -> None:
    _, t = translate(TOOL_STREAM)
    assert "".join(t.text_parts) == 'Checking.get_weather{"city": "Oslo"}get_time{}'


def test_done_is_seen_only_at_message_stop() -> None:
    t = translator()
    t.feed(TEXT_STREAM[: -len(STOP)])
    assert t.saw_done is False
    t.feed(STOP)
    assert t.saw_done is True


def test_message_stop_without_message_delta_still_sends_a_finish_chunk() -> None:
    chunks, _ = translate(START + TEXT_BLOCK + text_delta("Hi") + STOP)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1] == "[DONE]"


def test_pings_block_stops_and_unknown_events_produce_nothing() -> None:
    t = translator()
    t.feed(START)
    quiet = PING + event("content_block_stop", index=0) + event("brand_new_event", x=1)
    assert t.feed(quiet) == b""


def test_malformed_event_data_is_skipped() -> None:
    t = translator()
    assert t.feed(b"event: content_block_delta\ndata: {not json\n\n" + b"data: [1]\n\n" + b": comment\n\n") == b""


def test_a_delta_for_an_unknown_tool_block_is_skipped() -> None:
    t = translator()
    t.feed(START)
    assert t.feed(json_delta('{"a": 1}', 7)) == b""


def test_thinking_deltas_are_skipped() -> None:
    t = translator()
    t.feed(START)
    thinking = event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hmm"})
    assert t.feed(thinking) == b""


def test_an_error_event_becomes_the_relays_error_event_and_ends_the_translation() -> None:
    t = translator()
    t.feed(START + TEXT_BLOCK + text_delta("Hi"))
    error = event("error", error={"type": "overloaded_error", "message": "Overloaded"})
    assert t.feed(error + text_delta("more") + STOP) == error_event("Overloaded", "overloaded_error")
    assert (t.error, t.saw_done) == ("overloaded_error", False)


def test_an_error_event_without_details_still_reaches_the_buyer() -> None:
    out = frames(translator().feed(event("error")))
    assert out == [
        {
            "error": {
                "message": "The upstream provider failed mid-stream.",
                "type": "api_error",
                "param": None,
                "code": "api_error",
            }
        }
    ]


def test_nothing_is_sent_until_an_event_is_complete() -> None:
    t = translator()
    assert t.feed(START[:-1]) == b""
    assert frames(t.feed(START[-1:]))[0]["choices"][0]["delta"]["role"] == "assistant"


@settings(max_examples=150, deadline=None)
@given(
    stream=st.sampled_from([TEXT_STREAM, TOOL_STREAM, TEXT_STREAM.replace(b"\n", b"\r\n")]),
    include_usage=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
)
def test_any_split_of_the_stream_gives_the_same_events(stream: bytes, include_usage: bool, cuts: list[int]) -> None:
    whole = translator(include_usage).feed(stream)
    t = translator(include_usage)
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    pieces = [t.feed(stream[a:b]) for a, b in itertools.pairwise(bounds)]
    assert b"".join(pieces) == whole
    assert all(p.endswith(b"\n\n") for p in pieces if p)  # only whole events are ever sent


async def test_the_fake_upstreams_anthropic_stream_translates_to_its_words_and_usage() -> None:
    body = {"model": "claude-x", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    transport = httpx.ASGITransport(app=create_app(FakeUpstreamConfig(chunks=4)))
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        request = AnthropicAdapter().chat_request(body, "claude-x", True, "http://fake", "k")
        response = await client.post(request.url, content=request.body, headers=request.headers)
    t = AnthropicAdapter().stream_translator("claude-x", include_usage=True)
    chunks = frames(t.feed(response.content))
    assert "".join(d.get("content", "") for d in deltas(chunks)) == "fake reply word1 word2"
    assert t.usage == Usage(1, 4)
    assert chunks[-2]["usage"]["completion_tokens"] == 4
    assert t.saw_done
