"""OpenAI chat request -> Anthropic Messages request: URL, headers and the body translation."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aichat_gateway.proxy.adapters import UnsupportedRequest
from aichat_gateway.proxy.adapters.anthropic import AnthropicAdapter, api_root
from aichat_gateway.proxy.adapters.anthropic_request import DEFAULT_MAX_TOKENS

ADAPTER = AnthropicAdapter()
USER_HI = {"role": "user", "content": "hi"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def translate(**fields: Any) -> dict[str, Any]:
    body = {"model": "claude", "messages": [USER_HI], **fields}
    request = ADAPTER.chat_request(body, "claude-sonnet-4-5", False, "https://api.anthropic.com", "sk-ant")
    result: dict[str, Any] = orjson.loads(request.body)
    return result


def messages_of(*messages: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = translate(messages=list(messages))["messages"]
    return result


def refusal(**fields: Any) -> UnsupportedRequest:
    with pytest.raises(UnsupportedRequest) as caught:
        translate(**fields)
    return caught.value


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


@pytest.mark.parametrize(
    "base_url",
    ["https://api.anthropic.com", "https://api.anthropic.com/", "https://api.anthropic.com/v1", "https://a.b/v1/"],
)
def test_a_base_url_with_or_without_v1_reaches_v1_messages(base_url: str) -> None:
    request = ADAPTER.chat_request({"model": "c", "messages": [USER_HI]}, "c", False, base_url, "k")
    assert request.url.endswith("/v1/messages")
    assert "/v1/v1/" not in request.url
    assert request.method == "POST"


def test_a_base_url_with_a_proxy_prefix_keeps_the_prefix() -> None:
    assert api_root("https://gw.example.com/anthropic") == "https://gw.example.com/anthropic"


def test_the_key_travels_in_x_api_key_with_the_anthropic_version() -> None:
    request = ADAPTER.chat_request({"model": "c", "messages": [USER_HI]}, "c", False, "https://a", "sk-ant")
    assert request.headers == [
        (b"x-api-key", b"sk-ant"),
        (b"anthropic-version", b"2023-06-01"),
        (b"content-type", b"application/json"),
        (b"accept", b"application/json"),
    ]


def test_a_streamed_request_accepts_an_event_stream_and_sets_stream() -> None:
    request = ADAPTER.chat_request({"model": "c", "messages": [USER_HI]}, "c", True, "https://a", "k")
    assert (b"accept", b"text/event-stream") in request.headers
    assert orjson.loads(request.body)["stream"] is True


def test_a_plain_request_does_not_set_stream() -> None:
    assert "stream" not in translate()


def test_the_model_is_the_upstream_model() -> None:
    assert translate()["model"] == "claude-sonnet-4-5"


def test_gateway_fields_and_stream_options_are_not_forwarded() -> None:
    body = translate(provider={"order": ["x"]}, stream_options={"include_usage": True}, seed=3)
    assert not {"provider", "stream_options", "seed"} & set(body)


def test_max_tokens_defaults_when_absent() -> None:
    assert translate()["max_tokens"] == DEFAULT_MAX_TOKENS == 4096


def test_max_tokens_is_taken_from_max_tokens() -> None:
    assert translate(max_tokens=77)["max_tokens"] == 77


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    assert translate(max_tokens=77, max_completion_tokens=55)["max_tokens"] == 55


def test_a_user_string_becomes_a_text_block() -> None:
    assert messages_of(USER_HI) == [{"role": "user", "content": [text("hi")]}]


def test_system_and_developer_messages_become_the_top_level_system() -> None:
    body = translate(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            USER_HI,
        ]
    )
    assert body["system"] == "Be brief.\n\nUse metric units."
    assert body["messages"] == [{"role": "user", "content": [text("hi")]}]


def test_no_system_message_means_no_system_field() -> None:
    assert "system" not in translate()


def test_text_parts_become_text_blocks_and_empty_texts_are_dropped() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": ""}, {"type": "text", "text": "b"}]
    assert messages_of({"role": "user", "content": parts}) == [{"role": "user", "content": [text("a"), text("b")]}]


def test_a_base64_data_url_image_becomes_a_base64_image_source() -> None:
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"}}
    [message] = messages_of({"role": "user", "content": [part]})
    assert message["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    ]


def test_an_https_image_url_becomes_a_url_image_source() -> None:
    part = {"type": "image_url", "image_url": {"url": "https://img.example/cat.jpg"}}
    [message] = messages_of({"role": "user", "content": [part]})
    assert message["content"] == [{"type": "image", "source": {"type": "url", "url": "https://img.example/cat.jpg"}}]


@pytest.mark.parametrize("url", ["data:image/png,rawbytes", "ftp://x/y.png", "file:///etc/passwd", "data:;base64,AA"])
def test_an_image_url_that_is_neither_http_nor_base64_data_is_refused(url: str) -> None:
    part = {"type": "image_url", "image_url": {"url": url}}
    error = refusal(messages=[{"role": "user", "content": [part]}])
    assert error.param == "messages.0.content.0.image_url.url"


def test_an_audio_part_is_refused_naming_the_part() -> None:
    part = {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}
    error = refusal(messages=[USER_HI, {"role": "user", "content": [part]}])
    assert error.param == "messages.1.content.0"
    assert "input_audio" in error.message


def test_assistant_text_and_tool_calls_become_text_and_tool_use_blocks() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    messages = messages_of(USER_HI, {"role": "assistant", "content": "Checking.", "tool_calls": [call]})
    assert messages[1] == {
        "role": "assistant",
        "content": [
            text("Checking."),
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
        ],
    }


def test_empty_tool_call_arguments_become_an_empty_input() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "now", "arguments": ""}}
    messages = messages_of(USER_HI, {"role": "assistant", "content": None, "tool_calls": [call]})
    assert messages[1]["content"] == [{"type": "tool_use", "id": "call_1", "name": "now", "input": {}}]


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_tool_call_arguments_that_are_not_a_json_object_are_refused(arguments: str) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    error = refusal(messages=[USER_HI, {"role": "assistant", "tool_calls": [call]}])
    assert error.param == "messages.1.tool_calls.0.function.arguments"


def test_an_assistant_refusal_part_becomes_text() -> None:
    assistant = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]}
    assert messages_of(USER_HI, assistant)[1]["content"] == [text("I can't.")]


def test_consecutive_tool_messages_become_one_user_message_of_tool_results() -> None:
    calls = [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}},
    ]
    messages = messages_of(
        USER_HI,
        {"role": "assistant", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "rainy"}]},
    )
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[2]["content"] == [
        {"type": "tool_result", "tool_use_id": "a", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "b", "content": [text("rainy")]},
    ]


def test_a_user_message_after_tool_results_joins_them_after_the_results() -> None:
    call = {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = messages_of(
        USER_HI,
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "a", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    )
    assert messages[2]["content"] == [{"type": "tool_result", "tool_use_id": "a", "content": "sunny"}, text("thanks")]


def test_an_empty_tool_result_has_no_content() -> None:
    messages = messages_of(USER_HI, {"role": "tool", "tool_call_id": "a", "content": ""})
    assert messages[0]["content"][1] == {"type": "tool_result", "tool_use_id": "a"}


def test_a_tool_message_without_a_tool_call_id_is_refused() -> None:
    assert refusal(messages=[USER_HI, {"role": "tool", "content": "x"}]).param == "messages.1.tool_call_id"


def test_an_assistant_message_with_nothing_in_it_is_dropped() -> None:
    assert messages_of(USER_HI, {"role": "assistant", "content": ""}) == [{"role": "user", "content": [text("hi")]}]


def test_a_conversation_of_only_system_messages_is_refused() -> None:
    assert refusal(messages=[{"role": "system", "content": "x"}]).param == "messages"


def test_the_legacy_function_role_is_refused() -> None:
    error = refusal(messages=[USER_HI, {"role": "function", "name": "f", "content": "x"}])
    assert error.param == "messages.1.role"


def test_function_tools_become_anthropic_tools_with_an_input_schema() -> None:
    bare = {"type": "function", "function": {"name": "now"}}
    assert translate(tools=[WEATHER, bare])["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]


def test_a_non_function_tool_is_refused() -> None:
    assert refusal(tools=[{"type": "custom", "custom": {"name": "x"}}]).param == "tools.0"


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_maps_to_anthropics(choice: Any, expected: dict[str, Any]) -> None:
    assert translate(tools=[WEATHER], tool_choice=choice)["tool_choice"] == expected


def test_no_tool_choice_leaves_anthropics_default() -> None:
    assert "tool_choice" not in translate(tools=[WEATHER])


def test_parallel_tool_calls_false_disables_parallel_tool_use() -> None:
    body = translate(tools=[WEATHER], parallel_tool_calls=False)
    assert body["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    body = translate(tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


def test_tool_choice_without_tools_is_dropped() -> None:
    assert "tool_choice" not in translate(tool_choice="auto")


def test_a_malformed_tool_choice_is_refused() -> None:
    assert refusal(tools=[WEATHER], tool_choice={"type": "function"}).param == "tool_choice"


def test_temperature_top_p_and_stop_are_carried_over() -> None:
    body = translate(temperature=0.2, top_p=0.9, stop=["END", "STOP"])
    assert (body["temperature"], body["top_p"], body["stop_sequences"]) == (0.2, 0.9, ["END", "STOP"])


def test_a_single_stop_string_becomes_a_one_item_list() -> None:
    assert translate(stop="END")["stop_sequences"] == ["END"]


def test_a_temperature_above_one_is_refused() -> None:
    assert refusal(temperature=1.5).param == "temperature"


def test_user_becomes_metadata_user_id() -> None:
    assert translate(user="buyer-42")["metadata"] == {"user_id": "buyer-42"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("frequency_penalty", 0.5),
        ("presence_penalty", -1),
        ("response_format", {"type": "json_object"}),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("reasoning_effort", "high"),
        ("web_search_options", {}),
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
    ],
)
def test_fields_anthropic_cannot_honour_are_refused_naming_the_field(field: str, value: Any) -> None:
    error = refusal(**{field: value})
    assert error.param == field
    assert "Anthropic" in error.message or field in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 1),
        ("logprobs", False),
        ("frequency_penalty", 0),
        ("presence_penalty", 0.0),
        ("response_format", {"type": "text"}),
        ("modalities", ["text"]),
        ("logit_bias", {}),
    ],
)
def test_neutral_values_of_unsupported_fields_are_accepted(field: str, value: Any) -> None:
    assert field not in translate(**{field: value})


def test_embeddings_are_refused_naming_the_model() -> None:
    with pytest.raises(UnsupportedRequest) as caught:
        ADAPTER.embeddings_request({"model": "claude", "input": "x"}, "claude", "https://a", "k")
    assert caught.value.param == "model"


def test_the_validation_request_lists_models_with_the_anthropic_headers() -> None:
    request = ADAPTER.validation_request("https://api.anthropic.com/v1", "sk-ant")
    assert (request.method, request.url, request.body) == ("GET", "https://api.anthropic.com/v1/models", b"")
    assert request.headers == [
        (b"x-api-key", b"sk-ant"),
        (b"anthropic-version", b"2023-06-01"),
        (b"accept", b"application/json"),
    ]
