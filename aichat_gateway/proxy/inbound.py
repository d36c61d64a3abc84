"""Reading and validating what a client sends to `/v1/*`: pure checks over the parsed body.

The body is parsed once with orjson and passed upstream untouched except for the model name and
`stream_options` (the gateway always asks for usage). Only what the gateway itself relies on is
validated; every other OpenAI field (tools, response_format, seed, logprobs, ...) flows through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request

from aichat_gateway.config.settings import Settings
from aichat_gateway.httpbody import read_capped
from aichat_gateway.proxy.errors import AuthenticationFailed, InvalidRequest, PayloadTooLarge

# Extension fields the gateway consumes; never forwarded to a provider.
GATEWAY_FIELDS = ("provider",)


async def read_json_body(request: Request, max_bytes: int) -> dict[str, Any]:
    raw = await read_capped(
        request, max_bytes, lambda: PayloadTooLarge(f"Request body is larger than the {max_bytes}-byte limit.")
    )
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc.msg}.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    # A free upper bound on prompt tokens, for routing and holds. On the scope's state dict, which
    # `request.state` wraps: reading through that wrapper builds an AttributeError per read.
    request.scope.setdefault("state", {})["body_size"] = len(raw)
    return body


def bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.",
            code="missing_api_key",
        )
    return token


@dataclass(frozen=True, slots=True)
class ChatRequest:
    body: dict[str, Any]
    model: str
    stream: bool
    client_wants_usage: bool
    max_tokens: int | None
    choices: int = 1  # `n`: each choice may use up to max_tokens


def parse_chat_request(body: dict[str, Any], settings: Settings) -> ChatRequest:
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' is required and must be a non-empty array.", param="messages")
    if len(messages) > settings.max_messages:
        raise InvalidRequest(f"'messages' has more than {settings.max_messages} entries.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(
                f"messages[{index}] must be an object with a string 'role'.", param=f"messages.{index}"
            )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
    if stream_options is not None and not stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.", param="stream_options")
    # Both fields are checked whenever present: an upstream may honour either one.
    completion_cap = _bounded_int(body, "max_completion_tokens", 1, settings.max_tokens_cap)
    legacy_cap = _bounded_int(body, "max_tokens", 1, settings.max_tokens_cap)
    max_tokens = completion_cap if completion_cap is not None else legacy_cap
    choices = _bounded_int(body, "n", 1, settings.max_n) or 1
    wants_usage = bool(stream_options and stream_options.get("include_usage") is True)
    return ChatRequest(body, model, bool(stream), wants_usage, max_tokens, choices)


def parse_embeddings_request(body: dict[str, Any]) -> str:
    model = _model(body)
    value = body.get("input")
    valid = isinstance(value, str) or (
        isinstance(value, list)
        and 0 < len(value) <= 2048
        and all(isinstance(v, str | int) or isinstance(v, list) for v in value)
    )
    if not valid:
        raise InvalidRequest("'input' is required: a string or an array of up to 2048 strings.", param="input")
    return model


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model or len(model) > 256:
        raise InvalidRequest("'model' is required and must be a string.", param="model")
    return model


def _bounded_int(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be an integer between {low} and {high}.", param=name)
    return value


def upstream_payload(body: dict[str, Any], upstream_model: str, stream: bool) -> dict[str, Any]:
    """The body sent to the provider: the buyer's, with the provider's model name and usage asked for."""
    outgoing = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    outgoing["model"] = upstream_model
    if stream:
        outgoing["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return outgoing


def upstream_body(body: dict[str, Any], upstream_model: str, stream: bool) -> bytes:
    return orjson.dumps(upstream_payload(body, upstream_model, stream))
