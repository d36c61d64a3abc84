"""The fake upstream in-process through httpx.ASGITransport: answers, errors, knobs and stats."""

from __future__ import annotations

import argparse
import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import httpx
import orjson
import pytest

from aichat_gateway.fakeupstream import (
    FakeUpstream,
    FakeUpstreamConfig,
    add_cli_arguments,
    config_from_args,
    create_app,
)

CHAT = "/v1/chat/completions"
HELLO = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world, how are you?"}]}
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def client_for(config: FakeUpstreamConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(config)), base_url="http://fake")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(FakeUpstreamConfig()) as c:
        yield c


def sse_events(text: str) -> list[Any]:
    """The `data:` payloads of an SSE body, parsed; `[DONE]` stays a string."""
    frames = [f.removeprefix("data: ") for f in text.split("\n\n") if f]
    return [f if f == "[DONE]" else orjson.loads(f) for f in frames]


async def test_a_completion_echoes_the_model_and_answers_with_fake_words(client: httpx.AsyncClient) -> None:
    answer = (await client.post(CHAT, json={**HELLO, "model": "my-model"})).json()
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "my-model"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "fake reply " + " ".join(f"word{i}" for i in range(1, 15)),
        "refusal": None,
    }
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_usage_counts_prompt_characters_over_four_plus_one_and_one_token_per_word(
    client: httpx.AsyncClient,
) -> None:
    answer = (await client.post(CHAT, json=HELLO)).json()
    prompt = len("hello world, how are you?") // 4 + 1
    assert answer["usage"] == {"prompt_tokens": prompt, "completion_tokens": 16, "total_tokens": prompt + 16}


async def test_text_parts_of_a_message_count_towards_prompt_tokens(client: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "a" * 40}, {"type": "image_url", "image_url": {"url": "x"}}]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}]}
    assert (await client.post(CHAT, json=body)).json()["usage"]["prompt_tokens"] == 11


async def test_the_chunks_header_sets_the_number_of_words(client: httpx.AsyncClient) -> None:
    answer = (await client.post(CHAT, json=HELLO, headers={"x-fake-chunks": "3"})).json()
    assert answer["choices"][0]["message"]["content"] == "fake reply word1"
    assert answer["usage"]["completion_tokens"] == 3


async def test_the_report_usage_header_set_to_zero_leaves_usage_out(client: httpx.AsyncClient) -> None:
    answer = (await client.post(CHAT, json=HELLO, headers={"x-fake-report-usage": "0"})).json()
    assert "usage" not in answer


async def test_a_request_with_tools_gets_a_call_to_the_first_tool(client: httpx.AsyncClient) -> None:
    other = {"type": "function", "function": {"name": "other"}}
    answer = (await client.post(CHAT, json={**HELLO, "tools": [WEATHER_TOOL, other]})).json()
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": "{}"}


async def test_tool_choice_none_gets_a_text_answer(client: httpx.AsyncClient) -> None:
    body = {**HELLO, "tools": [WEATHER_TOOL], "tool_choice": "none"}
    answer = (await client.post(CHAT, json=body)).json()
    assert answer["choices"][0]["finish_reason"] == "stop"


async def test_a_stream_sends_a_role_chunk_then_one_word_per_chunk_then_done(
    client: httpx.AsyncClient,
) -> None:
    body = {**HELLO, "stream": True}
    response = await client.post(CHAT, json=body, headers={"x-fake-chunks": "3"})
    assert response.headers["content-type"].startswith("text/event-stream")
    *chunks, done = sse_events(response.text)
    assert done == "[DONE]"
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "fake"},
        {"content": " reply"},
        {"content": " word1"},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "stop"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"gpt-4o-mini"}


async def test_a_stream_without_include_usage_sends_no_usage(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json={**HELLO, "stream": True})
    assert all("usage" not in c for c in sse_events(response.text)[:-1])


async def test_a_stream_with_include_usage_ends_with_a_usage_chunk(client: httpx.AsyncClient) -> None:
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    *chunks, usage_chunk, done = sse_events((await client.post(CHAT, json=body)).text)
    assert done == "[DONE]"
    assert all(c["usage"] is None for c in chunks)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 16


async def test_include_usage_is_ignored_when_usage_reporting_is_off() -> None:
    body = {**HELLO, "stream": True, "stream_options": {"include_usage": True}}
    async with client_for(FakeUpstreamConfig(report_usage=False)) as client:
        events = sse_events((await client.post(CHAT, json=body)).text)
    assert all(e == "[DONE]" or e["choices"] for e in events)


async def test_a_streamed_tool_call_arrives_as_tool_call_deltas(client: httpx.AsyncClient) -> None:
    body = {**HELLO, "stream": True, "tools": [WEATHER_TOOL]}
    *chunks, _ = sse_events((await client.post(CHAT, json=body)).text)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[0]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": ""}
    assert "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas if "tool_calls" in d) == "{}"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_bad_json_gets_a_400_in_openai_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, content=b"{not json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"


async def test_messages_that_are_not_a_list_get_a_400_naming_the_param(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json={"model": "m", "messages": "hi"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages"


async def test_an_unknown_path_gets_a_404_in_openai_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/nothing", json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


async def test_a_missing_key_gets_a_401_when_a_key_is_required() -> None:
    async with client_for(FakeUpstreamConfig(require_key="sk-secret")) as client:
        response = await client.post(CHAT, json=HELLO)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


async def test_a_wrong_key_gets_a_401_when_a_key_is_required() -> None:
    async with client_for(FakeUpstreamConfig(require_key="sk-secret")) as client:
        response = await client.post(CHAT, json=HELLO, headers={"authorization": "Bearer sk-other"})
    assert response.status_code == 401


async def test_the_right_key_is_accepted_when_a_key_is_required() -> None:
    async with client_for(FakeUpstreamConfig(require_key="sk-secret")) as client:
        response = await client.post(CHAT, json=HELLO, headers={"authorization": "Bearer sk-secret"})
    assert response.status_code == 200


async def test_error_rate_one_answers_the_error_status_with_retry_after(client: httpx.AsyncClient) -> None:
    headers = {"x-fake-error-rate": "1", "x-fake-error-status": "429", "x-fake-retry-after": "7"}
    response = await client.post(CHAT, json=HELLO, headers=headers)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json()["error"]["code"] == "rate_limit_exceeded"


async def test_a_configured_error_rate_fails_a_streamed_request_before_any_byte() -> None:
    async with client_for(FakeUpstreamConfig(error_rate=1.0, error_status=503)) as client:
        response = await client.post(CHAT, json={**HELLO, "stream": True})
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error"


async def test_the_same_seed_fails_the_same_requests() -> None:
    async def statuses(seed: int) -> list[int]:
        async with client_for(FakeUpstreamConfig(error_rate=0.5, seed=seed)) as client:
            return [(await client.post(CHAT, json=HELLO)).status_code for _ in range(40)]

    first = await statuses(7)
    assert first == await statuses(7)
    assert 0 < first.count(500) < 40


async def test_a_malformed_knob_header_gets_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=HELLO, headers={"x-fake-chunks": "many"})
    assert response.status_code == 400


async def test_an_out_of_range_knob_header_gets_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=HELLO, headers={"x-fake-error-rate": "2"})
    assert response.status_code == 400


async def test_the_latency_header_delays_the_answer(client: httpx.AsyncClient) -> None:
    started = time.monotonic()
    await client.post(CHAT, json=HELLO, headers={"x-fake-latency-ms": "150"})
    assert time.monotonic() - started >= 0.15


async def test_embeddings_are_deterministic_eight_dimension_vectors(client: httpx.AsyncClient) -> None:
    body = {"model": "text-embedding-3-small", "input": ["alpha", "beta"], "encoding_format": "float"}
    first, again = [(await client.post("/v1/embeddings", json=body)).json() for _ in range(2)]
    assert first == again
    assert [len(d["embedding"]) for d in first["data"]] == [8, 8]
    assert first["data"][0]["embedding"] != first["data"][1]["embedding"]
    assert first["usage"]["prompt_tokens"] == (5 // 4 + 1) + (4 // 4 + 1)  # per input


async def test_base64_embeddings_decode_to_the_float_vectors(client: httpx.AsyncClient) -> None:
    body = {"model": "e", "input": "alpha"}
    floats = (await client.post("/v1/embeddings", json=body)).json()["data"][0]["embedding"]
    encoded = (await client.post("/v1/embeddings", json={**body, "encoding_format": "base64"})).json()
    decoded = struct.unpack("<8f", base64.b64decode(encoded["data"][0]["embedding"]))
    assert decoded == pytest.approx(floats, abs=1e-6)


async def test_embeddings_without_input_get_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/embeddings", json={"model": "e"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


async def test_models_lists_gpt_4o_mini(client: httpx.AsyncClient) -> None:
    answer = (await client.get("/v1/models")).json()
    assert answer["object"] == "list"
    assert "gpt-4o-mini" in [m["id"] for m in answer["data"]]


async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200


async def test_stats_count_requests_and_streams(client: httpx.AsyncClient) -> None:
    await client.post(CHAT, json=HELLO)
    await client.post(CHAT, json={**HELLO, "stream": True})
    stats = (await client.get("/_fake/stats")).json()
    assert stats["requests"] == 2
    assert (stats["streams_started"], stats["streams_completed"], stats["streams_cancelled"]) == (1, 1, 0)
    assert stats["in_flight"] == 0


async def test_stats_keep_the_last_request_with_only_the_last_four_key_characters(
    client: httpx.AsyncClient,
) -> None:
    await client.post(CHAT, json=HELLO, headers={"Authorization": "Bearer sk-abcdef1234", "X-Trace": "t1"})
    last = (await client.get("/_fake/stats")).json()["last_request"]
    assert last["headers"]["authorization"] == "1234"
    assert last["headers"]["x-trace"] == "t1"
    assert last["body"] == HELLO


async def test_stats_do_not_count_health_checks(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    assert (await client.get("/_fake/stats")).json()["requests"] == 0


async def test_reset_zeroes_the_stats(client: httpx.AsyncClient) -> None:
    await client.post(CHAT, json={**HELLO, "stream": True})
    await client.post("/_fake/reset")
    stats = (await client.get("/_fake/stats")).json()
    assert stats == {
        "requests": 0,
        "streams_started": 0,
        "streams_completed": 0,
        "streams_cancelled": 0,
        "in_flight": 0,
        "last_request": None,
    }


def test_a_config_with_an_error_rate_above_one_is_refused() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FakeUpstreamConfig(error_rate=1.5)


def test_cli_arguments_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    ns = parser.parse_args(["--port", "9200", "--chunks", "4", "--latency-ms", "20", "--no-usage"])
    assert ns.port == 9200
    assert config_from_args(ns) == FakeUpstreamConfig(chunks=4, latency_ms=20, report_usage=False)


def test_cli_defaults_match_the_config_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert config_from_args(parser.parse_args([])) == FakeUpstreamConfig()


def test_cli_arguments_leave_host_port_and_workers_to_a_parser_that_has_them() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=1234)
    add_cli_arguments(parser)
    ns = parser.parse_args(["--workers", "2"])
    assert (ns.port, ns.workers, ns.host) == (1234, 2, "127.0.0.1")


# --- Anthropic's Messages API (`POST /v1/messages`) ---

MESSAGES = "/v1/messages"
ANTHROPIC = {"anthropic-version": "2023-06-01"}
CLAUDE = {
    "model": "claude-x",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hello world, how are you?"}],
}
CLAUDE_TOOL = {"name": "get_weather", "input_schema": {"type": "object"}}


def anthropic_events(text: str) -> list[tuple[str, Any]]:
    """(event name, parsed data) for each event of an Anthropic SSE body."""
    events = []
    for frame in filter(None, text.split("\n\n")):
        name_line, data_line = frame.split("\n")
        events.append((name_line.removeprefix("event: "), orjson.loads(data_line.removeprefix("data: "))))
    return events


async def test_a_message_answers_the_fake_words_in_one_text_block(client: httpx.AsyncClient) -> None:
    answer = (await client.post(MESSAGES, json=CLAUDE, headers={**ANTHROPIC, "x-fake-chunks": "3"})).json()
    assert answer["type"] == "message"
    assert (answer["role"], answer["model"], answer["stop_reason"]) == ("assistant", "claude-x", "end_turn")
    assert answer["id"].startswith("msg_")
    assert answer["content"] == [{"type": "text", "text": "fake reply word1"}]


async def test_a_message_reports_input_and_output_tokens(client: httpx.AsyncClient) -> None:
    answer = (await client.post(MESSAGES, json=CLAUDE, headers=ANTHROPIC)).json()
    assert answer["usage"] == {"input_tokens": len("hello world, how are you?") // 4 + 1, "output_tokens": 16}


async def test_the_system_prompt_counts_towards_input_tokens(client: httpx.AsyncClient) -> None:
    body = {**CLAUDE, "system": "s" * 40, "messages": [{"role": "user", "content": "a" * 40}]}
    answer = (await client.post(MESSAGES, json=body, headers=ANTHROPIC)).json()
    assert answer["usage"]["input_tokens"] == 21


async def test_a_message_without_usage_reporting_has_no_usage(client: httpx.AsyncClient) -> None:
    headers = {**ANTHROPIC, "x-fake-report-usage": "0"}
    assert "usage" not in (await client.post(MESSAGES, json=CLAUDE, headers=headers)).json()


async def test_a_message_with_tools_answers_a_tool_use_of_the_first_tool(client: httpx.AsyncClient) -> None:
    body = {**CLAUDE, "tools": [CLAUDE_TOOL, {"name": "other", "input_schema": {}}]}
    answer = (await client.post(MESSAGES, json=body, headers=ANTHROPIC)).json()
    assert answer["stop_reason"] == "tool_use"
    [block] = answer["content"]
    assert (block["type"], block["name"], block["input"]) == ("tool_use", "get_weather", {})
    assert block["id"].startswith("toolu_")
    assert answer["usage"]["output_tokens"] == 1


async def test_a_named_tool_choice_picks_that_tool(client: httpx.AsyncClient) -> None:
    other = {"name": "other", "input_schema": {}}
    body = {**CLAUDE, "tools": [CLAUDE_TOOL, other], "tool_choice": {"type": "tool", "name": "other"}}
    answer = (await client.post(MESSAGES, json=body, headers=ANTHROPIC)).json()
    assert answer["content"][0]["name"] == "other"


async def test_tool_choice_none_gets_a_text_message(client: httpx.AsyncClient) -> None:
    body = {**CLAUDE, "tools": [CLAUDE_TOOL], "tool_choice": {"type": "none"}}
    answer = (await client.post(MESSAGES, json=body, headers=ANTHROPIC)).json()
    assert answer["content"][0]["type"] == "text"


async def test_a_message_without_max_tokens_gets_an_anthropic_400(client: httpx.AsyncClient) -> None:
    body = {k: v for k, v in CLAUDE.items() if k != "max_tokens"}
    response = await client.post(MESSAGES, json=body, headers=ANTHROPIC)
    assert response.status_code == 400
    assert response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


async def test_a_message_without_the_anthropic_version_header_gets_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post(MESSAGES, json=CLAUDE)
    assert response.status_code == 400
    assert "anthropic-version" in response.json()["error"]["message"]


async def test_a_streamed_message_sends_anthropics_event_sequence(client: httpx.AsyncClient) -> None:
    headers = {**ANTHROPIC, "x-fake-chunks": "3"}
    response = await client.post(MESSAGES, json={**CLAUDE, "stream": True}, headers=headers)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = anthropic_events(response.text)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    assert "".join(d["delta"]["text"] for n, d in events if n == "content_block_delta") == "fake reply word1"


async def test_a_streamed_message_reports_input_at_the_start_and_output_at_the_end(client: httpx.AsyncClient) -> None:
    response = await client.post(MESSAGES, json={**CLAUDE, "stream": True}, headers=ANTHROPIC)
    events = dict(anthropic_events(response.text))
    assert events["message_start"]["message"]["usage"]["input_tokens"] == len("hello world, how are you?") // 4 + 1
    assert events["message_delta"]["usage"] == {"output_tokens": 16}
    assert events["message_delta"]["delta"]["stop_reason"] == "end_turn"


async def test_a_streamed_message_without_usage_reporting_has_no_usage(client: httpx.AsyncClient) -> None:
    headers = {**ANTHROPIC, "x-fake-report-usage": "0"}
    response = await client.post(MESSAGES, json={**CLAUDE, "stream": True}, headers=headers)
    events = dict(anthropic_events(response.text))
    assert "usage" not in events["message_start"]["message"]
    assert "usage" not in events["message_delta"]


async def test_a_streamed_tool_use_sends_its_input_as_a_json_delta(client: httpx.AsyncClient) -> None:
    body = {**CLAUDE, "stream": True, "tools": [CLAUDE_TOOL]}
    events = anthropic_events((await client.post(MESSAGES, json=body, headers=ANTHROPIC)).text)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert [(b["type"], b["name"]) for b in starts] == [("tool_use", "get_weather")]
    assert [d["delta"] for n, d in events if n == "content_block_delta"] == [
        {"type": "input_json_delta", "partial_json": "{}"}
    ]
    assert dict(events)["message_delta"]["delta"]["stop_reason"] == "tool_use"


async def test_a_streamed_message_counts_as_a_completed_stream(client: httpx.AsyncClient) -> None:
    await client.post(MESSAGES, json={**CLAUDE, "stream": True}, headers=ANTHROPIC)
    stats = (await client.get("/_fake/stats")).json()
    assert (stats["streams_started"], stats["streams_completed"]) == (1, 1)


async def test_an_anthropic_request_is_authorized_by_x_api_key() -> None:
    async with client_for(FakeUpstreamConfig(require_key="sk-ant")) as client:
        ok = await client.post(MESSAGES, json=CLAUDE, headers={**ANTHROPIC, "x-api-key": "sk-ant"})
        bearer = await client.post(MESSAGES, json=CLAUDE, headers={**ANTHROPIC, "authorization": "Bearer sk-ant"})
    assert ok.status_code == 200
    assert bearer.status_code == 401
    assert bearer.json()["error"]["type"] == "authentication_error"


async def test_an_injected_error_has_anthropics_shape_and_type() -> None:
    headers = {**ANTHROPIC, "x-fake-error-rate": "1", "x-fake-error-status": "529", "x-fake-retry-after": "3"}
    async with client_for(FakeUpstreamConfig()) as client:
        response = await client.post(MESSAGES, json={**CLAUDE, "stream": True}, headers=headers)
    assert response.status_code == 529
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "overloaded_error"


async def test_models_with_the_anthropic_version_header_lists_claude_models(client: httpx.AsyncClient) -> None:
    answer = (await client.get("/v1/models", headers=ANTHROPIC)).json()
    assert answer["has_more"] is False
    assert {m["type"] for m in answer["data"]} == {"model"}
    assert all(m["id"].startswith("claude-") for m in answer["data"])


async def test_stats_keep_only_the_last_four_characters_of_x_api_key(client: httpx.AsyncClient) -> None:
    await client.post(MESSAGES, json=CLAUDE, headers={**ANTHROPIC, "x-api-key": "sk-ant-abcdef9876"})
    last = (await client.get("/_fake/stats")).json()["last_request"]
    assert last["headers"]["x-api-key"] == "9876"
    assert last["body"] == CLAUDE


# --- Fault knobs: trickle, abort, garbage ---


async def raw_exchange(app: FakeUpstream, body: dict[str, Any], **knobs: str) -> list[dict[str, Any]]:
    """The ASGI messages the app sends for one POST /v1/chat/completions (a client that never leaves)."""
    pending = [{"type": "http.request", "body": orjson.dumps(body), "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop()
        await asyncio.Event().wait()  # the client stays: the app's disconnect watcher waits here
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(dict(message))

    headers = [(b"x-fake-" + k.replace("_", "-").encode(), v.encode()) for k, v in knobs.items()]
    scope = {"type": "http", "method": "POST", "path": CHAT, "headers": headers}
    await app(scope, receive, send)
    return sent


def body_of(messages: list[dict[str, Any]]) -> bytes:
    return b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")


async def test_the_trickle_header_sends_a_plain_answer_one_byte_at_a_time() -> None:
    messages = await raw_exchange(create_app(FakeUpstreamConfig()), HELLO, trickle_ms="0.01", chunks="2")
    pieces = [m["body"] for m in messages[1:] if m["body"]]
    assert {len(p) for p in pieces} == {1}
    assert orjson.loads(b"".join(pieces))["choices"][0]["message"]["content"] == "fake reply"
    assert messages[-1]["more_body"] is False


async def test_a_trickled_stream_still_ends_with_done() -> None:
    app = create_app(FakeUpstreamConfig(trickle_ms=0.01))
    messages = await raw_exchange(app, {**HELLO, "stream": True}, chunks="2")
    assert {len(m["body"]) for m in messages[1:-1]} == {1}
    assert body_of(messages).endswith(b"data: [DONE]\n\n")
    assert messages[-1]["more_body"] is False


async def test_abort_after_ends_a_stream_after_that_many_frames_without_done() -> None:
    messages = await raw_exchange(create_app(FakeUpstreamConfig()), {**HELLO, "stream": True}, abort_after="3")
    events = sse_events(body_of(messages).decode())
    assert [e["choices"][0]["delta"] for e in events] == [
        {"role": "assistant", "content": ""},
        {"content": "fake"},
        {"content": " reply"},
    ]
    assert messages[-1]["more_body"] is True, "the answer must never be completed"


async def test_abort_after_cuts_a_plain_answer_short_of_its_content_length() -> None:
    messages = await raw_exchange(create_app(FakeUpstreamConfig(abort_after=10)), HELLO)
    declared = int(dict(messages[0]["headers"])[b"content-length"])
    assert len(body_of(messages)) == 10 < declared
    assert messages[-1]["more_body"] is True


async def test_an_aborted_stream_counts_as_started_but_not_completed() -> None:
    app = create_app(FakeUpstreamConfig(abort_after=2))
    await raw_exchange(app, {**HELLO, "stream": True})
    stats = app.stats.snapshot()
    assert (stats["streams_started"], stats["streams_completed"], stats["streams_cancelled"]) == (1, 0, 1)


async def test_the_garbage_header_answers_200_with_a_body_that_is_not_json(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=HELLO, headers={"x-fake-garbage": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)


async def test_a_garbage_stream_sends_malformed_events_and_no_done(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json={**HELLO, "stream": True}, headers={"x-fake-garbage": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    data = [line.removeprefix("data: ") for line in response.text.split("\n") if line.startswith("data: ")]
    assert data and "[DONE]" not in data
    for payload in data:
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(payload)


async def test_an_injected_error_is_answered_before_any_garbage() -> None:
    async with client_for(FakeUpstreamConfig(garbage=True, error_rate=1.0)) as client:
        response = await client.post(CHAT, json=HELLO)
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"


def test_a_config_with_a_negative_trickle_is_refused() -> None:
    with pytest.raises(ValueError, match="trickle_ms"):
        FakeUpstreamConfig(trickle_ms=-1)


def test_a_config_with_a_negative_abort_after_is_refused() -> None:
    with pytest.raises(ValueError, match="abort_after"):
        FakeUpstreamConfig(abort_after=-1)


def test_cli_arguments_set_the_fault_knobs() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    ns = parser.parse_args(["--trickle-ms", "50", "--abort-after", "4", "--garbage"])
    assert config_from_args(ns) == FakeUpstreamConfig(trickle_ms=50, abort_after=4, garbage=True)
