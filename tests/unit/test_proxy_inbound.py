"""`proxy/inbound.py`: reading and validating what a client sends to `/v1/*` (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.requests import Request

from aichat_gateway.config.settings import Settings, load_settings
from aichat_gateway.proxy.errors import AuthenticationFailed, InvalidRequest, PayloadTooLarge
from aichat_gateway.proxy.inbound import (
    GATEWAY_FIELDS,
    bearer_key,
    parse_chat_request,
    parse_embeddings_request,
    read_json_body,
    upstream_body,
)

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(
        GATEWAY_SECRET_KEY="unit-test-secret-" + "y" * 32,
        GATEWAY_MAX_MESSAGES=4,
        GATEWAY_MAX_TOKENS_CAP=1000,
        GATEWAY_MAX_N=4,
    )


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": MESSAGES, **fields}


def without(name: str) -> dict[str, Any]:
    body = chat()
    del body[name]
    return body


# ---- parse_chat_request: what is accepted --------------------------------------------------------


def test_a_minimal_request_is_a_non_streamed_request_without_a_token_limit(settings: Settings) -> None:
    parsed = parse_chat_request(chat(), settings)
    assert (parsed.model, parsed.stream, parsed.client_wants_usage, parsed.max_tokens) == (
        "gpt-4o-mini",
        False,
        False,
        None,
    )
    assert parsed.body == chat()


@pytest.mark.parametrize(
    "stream_options, wants",
    [
        (None, False),
        ({}, False),
        ({"include_usage": False}, False),
        ({"include_usage": True}, True),
        ({"include_usage": "true"}, False),
        ({"include_usage": 1}, False),
    ],
)
def test_the_buyer_wants_usage_only_with_include_usage_exactly_true(
    settings: Settings, stream_options: dict[str, Any] | None, wants: bool
) -> None:
    body = chat(stream=True) if stream_options is None else chat(stream=True, stream_options=stream_options)
    parsed = parse_chat_request(body, settings)
    assert parsed.stream is True
    assert parsed.client_wants_usage is wants


def test_stream_null_is_a_non_streamed_request(settings: Settings) -> None:
    assert parse_chat_request(chat(stream=None), settings).stream is False


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({"max_tokens": 1}, 1),
        ({"max_tokens": 1000}, 1000),
        ({"max_completion_tokens": 7}, 7),
        ({"max_completion_tokens": 7, "max_tokens": 9}, 7),
        ({"max_tokens": None}, None),
    ],
)
def test_the_token_limit_comes_from_max_completion_tokens_first_then_max_tokens(
    settings: Settings, fields: dict[str, Any], expected: int | None
) -> None:
    assert parse_chat_request(chat(**fields), settings).max_tokens == expected


def test_fields_the_gateway_does_not_know_are_accepted(settings: Settings) -> None:
    body = chat(
        tools=[{"type": "function"}],
        response_format={"type": "json_object"},
        seed=1,
        logprobs=True,
        n=4,
        future_field={"x": 1},
        provider={"order": ["a"]},
    )
    assert parse_chat_request(body, settings).body is body


def test_the_message_limit_itself_is_allowed(settings: Settings) -> None:
    assert parse_chat_request(chat(messages=MESSAGES * 4), settings).model == "gpt-4o-mini"


# ---- parse_chat_request: what is refused ----------------------------------------------------------


@pytest.mark.parametrize(
    "body, param",
    [
        pytest.param(without("model"), "model", id="no model"),
        pytest.param(chat(model=None), "model", id="model null"),
        pytest.param(chat(model=42), "model", id="model not a string"),
        pytest.param(chat(model=""), "model", id="model empty"),
        pytest.param(chat(model="m" * 257), "model", id="model too long"),
        pytest.param(without("messages"), "messages", id="no messages"),
        pytest.param(chat(messages=[]), "messages", id="messages empty"),
        pytest.param(chat(messages="hi"), "messages", id="messages a string"),
        pytest.param(chat(messages={"role": "user"}), "messages", id="messages an object"),
        pytest.param(chat(messages=MESSAGES * 5), "messages", id="more messages than allowed"),
        pytest.param(chat(messages=["hi"]), "messages.0", id="message not an object"),
        pytest.param(chat(messages=[*MESSAGES, {"content": "x"}]), "messages.1", id="message without role"),
        pytest.param(chat(messages=[{"role": 1}]), "messages.0", id="role not a string"),
        pytest.param(chat(stream="yes"), "stream", id="stream a string"),
        pytest.param(chat(stream=1), "stream", id="stream an int"),
        pytest.param(chat(stream=True, stream_options=[]), "stream_options", id="stream_options a list"),
        pytest.param(chat(stream_options={"include_usage": True}), "stream_options", id="stream_options, no stream"),
        pytest.param(chat(max_tokens=0), "max_tokens", id="max_tokens 0"),
        pytest.param(chat(max_tokens=-5), "max_tokens", id="max_tokens negative"),
        pytest.param(chat(max_tokens=1001), "max_tokens", id="max_tokens over the cap"),
        pytest.param(chat(max_tokens=1.5), "max_tokens", id="max_tokens a float"),
        pytest.param(chat(max_tokens=10.0), "max_tokens", id="max_tokens an integral float"),
        pytest.param(chat(max_tokens="10"), "max_tokens", id="max_tokens a string"),
        pytest.param(chat(max_tokens=True), "max_tokens", id="max_tokens a boolean"),
        pytest.param(chat(max_completion_tokens=0), "max_completion_tokens", id="max_completion_tokens 0"),
        pytest.param(chat(max_completion_tokens="x"), "max_completion_tokens", id="max_completion_tokens str"),
        pytest.param(chat(n=0), "n", id="n 0"),
        pytest.param(chat(n=5), "n", id="n over the limit"),
        pytest.param(chat(n="2"), "n", id="n a string"),
    ],
)
def test_an_invalid_chat_request_is_refused_naming_the_field(
    settings: Settings, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(body, settings)
    assert caught.value.param == param
    assert caught.value.status == 400 and caught.value.code == "invalid_request"


@pytest.mark.parametrize("max_tokens", [10**12, "junk", -1])
def test_an_invalid_max_tokens_is_refused_even_next_to_a_valid_max_completion_tokens(
    settings: Settings, max_tokens: Any
) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat_request(chat(max_completion_tokens=10, max_tokens=max_tokens), settings)
    assert caught.value.param == "max_tokens"


# ---- upstream_body ----------------------------------------------------------------------------------


def test_the_upstream_body_is_the_buyers_with_the_upstream_model() -> None:
    body = chat(temperature=0.2, tools=[{"type": "function", "function": {"name": "f"}}], seed=3)
    sent = orjson.loads(upstream_body(body, "gpt-4o-mini-2024-07-18", stream=False))
    assert sent == {**body, "model": "gpt-4o-mini-2024-07-18"}
    assert "stream_options" not in sent


def test_the_upstream_body_never_carries_the_gateway_extension_fields() -> None:
    body = chat(provider={"order": ["lst_1"]})
    assert "provider" in GATEWAY_FIELDS
    sent = orjson.loads(upstream_body(body, "m", stream=False))
    assert not set(GATEWAY_FIELDS) & set(sent)


@pytest.mark.parametrize("stream_options", [None, {"include_usage": False}, {"include_usage": True}])
def test_a_streamed_upstream_body_always_asks_for_usage(stream_options: dict[str, Any] | None) -> None:
    body = chat(stream=True) if stream_options is None else chat(stream=True, stream_options=stream_options)
    sent = orjson.loads(upstream_body(body, "m", stream=True))
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["stream"] is True


def test_a_streamed_upstream_body_keeps_the_buyers_other_stream_options() -> None:
    body = chat(stream=True, stream_options={"include_usage": False, "include_obfuscation": False})
    sent = orjson.loads(upstream_body(body, "m", stream=True))
    assert sent["stream_options"] == {"include_usage": True, "include_obfuscation": False}


def test_building_the_upstream_body_leaves_the_buyers_body_untouched() -> None:
    body = chat(stream=True, stream_options={"include_usage": False}, provider={"x": 1})
    before = orjson.dumps(body)
    upstream_body(body, "other", stream=True)
    assert orjson.dumps(body) == before


# ---- parse_embeddings_request ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]], ["x"] * 2048])
def test_valid_embeddings_inputs_are_accepted(value: Any) -> None:
    assert parse_embeddings_request({"model": "text-embedding-3-small", "input": value}) == "text-embedding-3-small"


@pytest.mark.parametrize("value", [None, [], ["x"] * 2049, {"text": "a"}, 3, [{"a": 1}], [None]])
def test_invalid_embeddings_inputs_are_refused_naming_input(value: Any) -> None:
    body = {"model": "text-embedding-3-small"} if value is None else {"model": "m", "input": value}
    with pytest.raises(InvalidRequest) as caught:
        parse_embeddings_request(body)
    assert caught.value.param == "input"


def test_an_embeddings_request_without_a_model_is_refused_naming_model() -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_embeddings_request({"input": "x"})
    assert caught.value.param == "model"


# ---- bearer_key ---------------------------------------------------------------------------------------


def request_with(headers: dict[str, str], body_parts: list[bytes] | None = None) -> Request:
    queue = list(body_parts or [b""])

    async def receive() -> dict[str, Any]:
        chunk = queue.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(queue)}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope, receive)


@pytest.mark.parametrize(
    "header, key",
    [
        ("Bearer agw-abc", "agw-abc"),
        ("bearer agw-abc", "agw-abc"),
        ("BEARER  agw-abc ", "agw-abc"),
    ],
)
def test_the_bearer_key_is_read_from_the_authorization_header(header: str, key: str) -> None:
    assert bearer_key(request_with({"Authorization": header})) == key


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "agw-abc"},
    ],
)
def test_a_missing_bearer_key_is_401_missing_api_key(headers: dict[str, str]) -> None:
    with pytest.raises(AuthenticationFailed) as caught:
        bearer_key(request_with(headers))
    assert (caught.value.status, caught.value.code) == (401, "missing_api_key")


# ---- read_json_body -----------------------------------------------------------------------------------


async def test_a_json_object_body_is_read_in_parts() -> None:
    request = request_with({}, [b'{"model": ', b'"m", "messages"', b": []}"])
    assert await read_json_body(request, 1024) == {"model": "m", "messages": []}


async def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("the body must not be read")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-length", b"2000")],
    }
    with pytest.raises(PayloadTooLarge) as caught:
        await read_json_body(Request(scope, receive), 1024)
    assert (caught.value.status, caught.value.code) == (413, "request_too_large")


async def test_a_streamed_body_over_the_limit_is_413() -> None:
    request = request_with({}, [b"x" * 600, b"x" * 600])
    with pytest.raises(PayloadTooLarge):
        await read_json_body(request, 1024)


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"[1, 2]", b'"a string"', b"null", b"\xff\xfe"])
async def test_a_body_that_is_not_a_json_object_is_400(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        await read_json_body(request_with({}, [raw]), 1024)
    assert (caught.value.status, caught.value.param) == (400, None)
