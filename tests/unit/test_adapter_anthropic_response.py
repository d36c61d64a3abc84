"""Anthropic complete answers -> OpenAI chat.completion JSON, usage and errors."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aichat_gateway.proxy.adapters import UntranslatableResponse
from aichat_gateway.proxy.adapters.anthropic import AnthropicAdapter
from aichat_gateway.proxy.sse import Usage

ADAPTER = AnthropicAdapter(clock=lambda: 1_700_000_000.5)


def message(*content: dict[str, Any], stop: str | None = "end_turn", **extra: Any) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": list(content),
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 5},
        **extra,
    }


def answer_of(msg: dict[str, Any], status: int = 200) -> dict[str, Any]:
    result: dict[str, Any] = orjson.loads(ADAPTER.chat_response(status, orjson.dumps(msg), "claude-buyer"))
    return result


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(call_id: str, name: str, input_: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": input_}


def test_an_answer_is_an_openai_chat_completion_with_the_given_model_and_clock() -> None:
    answer = answer_of(message(text("Hello")))
    assert answer["object"] == "chat.completion"
    assert answer["id"] == "chatcmpl-msg_01"
    assert (answer["model"], answer["created"]) == ("claude-buyer", 1_700_000_000)
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello", "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]


def test_text_blocks_are_joined_into_one_content_string() -> None:
    assert answer_of(message(text("Hel"), text("lo")))["choices"][0]["message"]["content"] == "Hello"


def test_tool_use_blocks_become_tool_calls_with_json_string_arguments() -> None:
    msg = message(text("Let me check."), tool_use("toolu_1", "get_weather", {"city": "Oslo"}), stop="tool_use")
    choice = answer_of(msg)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    [call] = choice["message"]["tool_calls"]
    assert call == {
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Oslo"}


def test_an_answer_with_only_tool_calls_has_null_content() -> None:
    msg = message(tool_use("t1", "a", {}), tool_use("t2", "b", {"x": 1}), stop="tool_use")
    choice = answer_of(msg)["choices"][0]
    assert choice["message"]["content"] is None
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["a", "b"]


def test_an_empty_answer_has_empty_content() -> None:
    assert answer_of(message())["choices"][0]["message"]["content"] == ""


def test_thinking_blocks_are_left_out() -> None:
    msg = message({"type": "thinking", "thinking": "hmm", "signature": "s"}, text("42"))
    assert answer_of(msg)["choices"][0]["message"]["content"] == "42"


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons_map_to_finish_reasons(stop: str, finish: str) -> None:
    assert answer_of(message(text("x"), stop=stop))["choices"][0]["finish_reason"] == finish


def test_usage_maps_input_and_output_tokens() -> None:
    assert answer_of(message(text("x")))["usage"] == {
        "prompt_tokens": 12,
        "completion_tokens": 5,
        "total_tokens": 17,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def test_cache_writes_and_reads_count_into_prompt_tokens() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 1000,
        "output_tokens": 5,
    }
    assert answer_of(message(text("x"), usage=usage))["usage"] == {
        "prompt_tokens": 1110,
        "completion_tokens": 5,
        "total_tokens": 1115,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }


def test_an_answer_without_usage_has_no_usage() -> None:
    msg = message(text("x"))
    del msg["usage"]
    assert "usage" not in answer_of(msg)


def test_usage_of_response_counts_cache_tokens_as_prompt_tokens() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": None,
        "output_tokens": 5,
    }
    assert ADAPTER.usage_of_response(orjson.dumps(message(usage=usage))) == Usage(110, 5)


@pytest.mark.parametrize("content", [b"<html>", b"[]", b'{"usage": null}', b'{"usage": {"output_tokens": 3}}'])
def test_usage_of_an_answer_without_input_tokens_is_none(content: bytes) -> None:
    assert ADAPTER.usage_of_response(content) is None


@pytest.mark.parametrize("content", [b"<html>oops</html>", b"[1, 2]", b'{"type": "message"}'])
def test_an_unreadable_successful_answer_is_untranslatable(content: bytes) -> None:
    with pytest.raises(UntranslatableResponse):
        ADAPTER.chat_response(200, content, "m")


@pytest.mark.parametrize(
    ("status", "kind", "openai_type"),
    [
        (400, "invalid_request_error", "invalid_request_error"),
        (401, "authentication_error", "invalid_request_error"),
        (403, "permission_error", "invalid_request_error"),
        (404, "not_found_error", "invalid_request_error"),
        (413, "request_too_large", "invalid_request_error"),
        (429, "rate_limit_error", "rate_limit_error"),
        (500, "api_error", "api_error"),
        (529, "overloaded_error", "api_error"),
    ],
)
def test_anthropic_errors_become_openai_errors_with_the_anthropic_type_as_code(
    status: int, kind: str, openai_type: str
) -> None:
    content = orjson.dumps({"type": "error", "error": {"type": kind, "message": "went wrong"}})
    assert orjson.loads(ADAPTER.chat_response(status, content, "m")) == {
        "error": {"message": "went wrong", "type": openai_type, "param": None, "code": kind}
    }


def test_an_unreadable_error_body_becomes_an_openai_error_naming_the_status() -> None:
    error = orjson.loads(ADAPTER.chat_response(502, b"<html>Bad gateway</html>", "m"))["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "502" in error["message"]
    assert (error["type"], error["code"]) == ("api_error", None)
