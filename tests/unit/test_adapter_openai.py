"""The OpenAI adapter: today's pass-through behaviour, expressed as pure request/answer functions."""

from __future__ import annotations

import tracemalloc

import orjson

from aichat_gateway.proxy.adapters.openai import OpenAIAdapter
from aichat_gateway.proxy.inbound import upstream_body
from aichat_gateway.proxy.relay import StreamMeter
from aichat_gateway.proxy.sse import Usage

BASE = "https://api.openai.example/v1"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "provider": {"order": ["x"]}}
ADAPTER = OpenAIAdapter()


def test_the_kind_is_openai() -> None:
    assert ADAPTER.kind == "openai"


def test_a_chat_request_posts_to_chat_completions_under_the_base_url() -> None:
    request = ADAPTER.chat_request(BODY, "gpt-4o-mini-2024", False, BASE, "sk-1")
    assert (request.method, request.url) == ("POST", BASE + "/chat/completions")


def test_a_chat_request_body_is_the_inbound_upstream_body() -> None:
    for stream in (False, True):
        request = ADAPTER.chat_request(BODY, "gpt-4o-mini-2024", stream, BASE, "sk-1")
        assert request.body == upstream_body(BODY, "gpt-4o-mini-2024", stream)


def test_a_chat_request_sends_the_key_as_a_bearer_token_with_json_headers() -> None:
    request = ADAPTER.chat_request(BODY, "m", False, BASE, "sk-1")
    assert request.headers == [
        (b"authorization", b"Bearer sk-1"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
    ]


def test_a_streamed_chat_request_accepts_an_event_stream() -> None:
    request = ADAPTER.chat_request(BODY, "m", True, BASE, "sk-1")
    assert (b"accept", b"text/event-stream") in request.headers


def test_the_request_repr_never_shows_the_key() -> None:
    request = ADAPTER.chat_request(BODY, "m", False, BASE, "sk-very-secret")
    assert "sk-very-secret" not in repr(request)


def test_an_embeddings_request_forwards_the_body_with_the_upstream_model_and_without_gateway_fields() -> None:
    body = {"model": "emb", "input": ["a"], "encoding_format": "float", "provider": {"order": ["x"]}}
    request = ADAPTER.embeddings_request(body, "text-embedding-3-small", BASE, "sk-1")
    assert request.url == BASE + "/embeddings"
    assert orjson.loads(request.body) == {"model": "text-embedding-3-small", "input": ["a"], "encoding_format": "float"}


def test_a_chat_answer_passes_through_byte_for_byte() -> None:
    content = b'{"id":"x","choices":[] ,"model":"gpt-4o-mini"}'
    assert ADAPTER.chat_response(200, content, "buyer-model") is content


def test_an_error_answer_passes_through_byte_for_byte() -> None:
    content = b'{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}'
    assert ADAPTER.chat_response(400, content, "m") is content


def test_usage_is_read_from_the_answer() -> None:
    content = orjson.dumps({"usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
    assert ADAPTER.usage_of_response(content) == Usage(7, 3)


def test_usage_without_completion_tokens_counts_zero_completion_tokens() -> None:
    assert ADAPTER.usage_of_response(b'{"usage":{"prompt_tokens":7}}') == Usage(7, 0)


def test_an_answer_without_usage_has_no_usage() -> None:
    for content in (b'{"choices":[]}', b'{"usage":null}', b'{"usage":{"prompt_tokens":true}}', b"[1]"):
        assert ADAPTER.usage_of_response(content) is None


def test_an_unreadable_answer_has_no_usage() -> None:
    assert ADAPTER.usage_of_response(b"<html>") is None


def test_the_stream_translator_is_the_relays_stream_meter_forwarding_usage_as_asked() -> None:
    for include_usage in (False, True):
        translator = ADAPTER.stream_translator("m", include_usage)
        assert isinstance(translator, StreamMeter)
        usage_frame = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}\n\n'
        assert (translator.feed(usage_frame) == usage_frame) is include_usage
        assert translator.usage == Usage(1, 2)


def test_the_validation_request_gets_the_model_list_with_the_bearer_key() -> None:
    request = ADAPTER.validation_request(BASE, "sk-1")
    assert (request.method, request.url, request.body) == ("GET", BASE + "/models", b"")
    assert request.headers == [(b"authorization", b"Bearer sk-1"), (b"accept", b"application/json")]


def test_a_short_request_body_holds_about_its_own_size_in_memory_for_the_life_of_a_stream() -> None:
    # orjson returns its 4 KiB working buffer for any short document; a stream keeps its request
    # body until it ends, so 1,000 open streams would hold 4 MiB of slack.
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        bodies = [ADAPTER.chat_request(BODY, "gpt-4o-mini-2024", True, BASE, "sk-1").body for _ in range(100)]
        grown = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert len(bodies[0]) < 200
    assert grown / len(bodies) < 1024
