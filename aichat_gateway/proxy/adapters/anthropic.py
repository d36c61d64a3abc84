"""Anthropic's Messages API behind the OpenAI surface: the adapter and its answer translation.

Base URL: a seller may list the host (`https://api.anthropic.com`) or the version root
(`https://api.anthropic.com/v1`); a trailing `/v1` is dropped and `/v1/messages` (`/v1/models` for
the key check) is appended, so both work, and so does a proxy prefix
(`https://gw.example.com/anthropic` -> `.../anthropic/v1/messages`). Headers: `x-api-key`,
`anthropic-version: 2023-06-01`.

Requests are translated in `anthropic_request.py` (what maps, what is refused, the default
`max_tokens`). Answers: text blocks are joined into `content`, `tool_use` blocks become
`tool_calls` (arguments = the JSON of `input`), thinking and server-tool blocks are skipped (never
requested), `stop_reason` maps to `finish_reason`, and usage maps to OpenAI's with cache writes and
cache reads counted into `prompt_tokens` (reads also in `prompt_tokens_details.cached_tokens`).
Anthropic error bodies become OpenAI's error shape with Anthropic's error type as `code`; the
HTTP status is the caller's to keep. The answer's `model` is the name the caller passes (the
buyer's), its `id` is `chatcmpl-` + Anthropic's message id.

Streams: `AnthropicStreamTranslator` reads Anthropic's events incrementally and writes OpenAI
`chat.completion.chunk` events: a role chunk at `message_start`, content and tool-call deltas
(tool calls numbered 0, 1, ... in order; id and name in the first delta, argument fragments after),
the finish chunk at `message_delta`, then at `message_stop` the usage chunk (`choices: []`, only if
the buyer asked for usage) and `data: [DONE]`. With include_usage every chunk carries
`"usage": null`, as OpenAI's do. An `error` event becomes the relay's error event and ends the
translation (`saw_done` stays False, `error` holds Anthropic's error type). `ping`, unknown events
and malformed JSON are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from aichat_gateway.proxy.adapters.anthropic_request import DEFAULT_MAX_TOKENS, messages_body
from aichat_gateway.proxy.adapters.base import (
    UnsupportedRequest,
    UntranslatableResponse,
    UpstreamRequest,
    encode_body,
)
from aichat_gateway.proxy.relay import error_event
from aichat_gateway.proxy.sse import SSEEvent, SSEParser, Usage

__all__ = ["ANTHROPIC_VERSION", "DEFAULT_MAX_TOKENS", "AnthropicAdapter", "AnthropicStreamTranslator", "api_root"]

ANTHROPIC_VERSION = b"2023-06-01"
_JSON = b"application/json"
_DONE = b"data: [DONE]\n\n"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic error type -> OpenAI error type (the Anthropic type itself becomes the `code`).
_ERROR_TYPES = {
    "rate_limit_error": "rate_limit_error",
    "api_error": "api_error",
    "overloaded_error": "api_error",
    "timeout_error": "api_error",
}


def api_root(base_url: str) -> str:
    """The listing's base URL without a trailing slash or `/v1`: paths start with `/v1/`."""
    root = base_url.rstrip("/")
    return root.removesuffix("/v1")


def _headers(api_key: str, accept: bytes, *, with_body: bool) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-api-key", api_key.encode()), (b"anthropic-version", ANTHROPIC_VERSION)]
    if with_body:
        headers.append((b"content-type", _JSON))
    headers.append((b"accept", accept))
    return headers


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage_numbers(usage: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt tokens with cache writes and reads, cache reads, output tokens)."""
    cached = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + _count(usage.get("cache_creation_input_tokens")) + cached
    return prompt, cached, _count(usage.get("output_tokens"))


def _openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    prompt, cached, completion = _usage_numbers(usage)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def _loads_object(content: bytes | str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _error_fields(payload: dict[str, Any] | None) -> tuple[str, str | None]:
    error = payload.get("error") if payload else None
    if not isinstance(error, dict):
        return "", None
    message, kind = error.get("message"), error.get("type")
    return (message if isinstance(message, str) else ""), (kind if isinstance(kind, str) else None)


def openai_error(status: int, content: bytes) -> bytes:
    """Anthropic's `{"type": "error", "error": {"type", "message"}}` in OpenAI's error shape."""
    message, kind = _error_fields(_loads_object(content))
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    error = {
        "message": message or f"The upstream provider answered with HTTP status {status}.",
        "type": _ERROR_TYPES.get(kind or "", fallback),
        "param": None,
        "code": kind,
    }
    return orjson.dumps({"error": error})


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") if isinstance(block.get("input"), dict) else {}).decode()
    return {"id": block.get("id"), "type": "function", "function": {"name": block.get("name"), "arguments": arguments}}


def openai_completion(answer: dict[str, Any], model: str, created: int) -> dict[str, Any]:
    """An Anthropic `message` as an OpenAI `chat.completion` object."""
    blocks = answer.get("content")
    if not isinstance(blocks, list):
        raise UntranslatableResponse("The upstream provider's answer has no content.")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            calls.append(_tool_call(block))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    message["refusal"] = None
    if calls:
        message["tool_calls"] = calls
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{answer.get('id') or 'anthropic'}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(str(answer.get("stop_reason")), "stop"),
            }
        ],
    }
    usage = answer.get("usage")
    if isinstance(usage, dict):
        completion["usage"] = _openai_usage(usage)
    return completion


class AnthropicAdapter:
    """Stateless; one shared instance lives in `ADAPTERS["anthropic"]`. `clock` is for tests."""

    __slots__ = ("_clock",)
    kind = "anthropic"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def chat_request(
        self, body: dict[str, Any], upstream_model: str, stream: bool, base_url: str, api_key: str
    ) -> UpstreamRequest:
        payload = messages_body(body, upstream_model, stream)
        accept = b"text/event-stream" if stream else _JSON
        url = api_root(base_url) + "/v1/messages"
        return UpstreamRequest("POST", url, _headers(api_key, accept, with_body=True), encode_body(payload))

    def embeddings_request(
        self, body: dict[str, Any], upstream_model: str, base_url: str, api_key: str
    ) -> UpstreamRequest:
        raise UnsupportedRequest(
            "This model is served by Anthropic, which has no embeddings endpoint; choose an embeddings model.",
            param="model",
        )

    def chat_response(self, status: int, content: bytes, model: str) -> bytes:
        if status >= 400:
            return openai_error(status, content)
        answer = _loads_object(content)
        if answer is None:
            raise UntranslatableResponse("The upstream provider sent an unreadable answer.")
        return orjson.dumps(openai_completion(answer, model, int(self._clock())))

    def usage_of_response(self, content: bytes) -> Usage | None:
        answer = _loads_object(content)
        usage = answer.get("usage") if answer else None
        if not isinstance(usage, dict) or not isinstance(usage.get("input_tokens"), int):
            return None
        prompt, _, completion = _usage_numbers(usage)
        return Usage(prompt, completion)

    def stream_translator(
        self, model: str, include_usage: bool, cost_of: Callable[[int, int], str] | None = None
    ) -> AnthropicStreamTranslator:
        return AnthropicStreamTranslator(model, include_usage, int(self._clock()), cost_of)

    def validation_request(self, base_url: str, api_key: str) -> UpstreamRequest:
        return UpstreamRequest("GET", api_root(base_url) + "/v1/models", _headers(api_key, _JSON, with_body=False))


class AnthropicStreamTranslator:
    """Anthropic stream bytes in, OpenAI chunk bytes out (see the module docstring). One per stream."""

    __slots__ = (
        "_cost_of",
        "_created",
        "_ended",
        "_finish_sent",
        "_id",
        "_include_usage",
        "_model",
        "_parser",
        "_start_usage",
        "_tools",
        "error",
        "saw_done",
        "text_parts",
        "usage",
    )

    def __init__(
        self, model: str, include_usage: bool, created: int, cost_of: Callable[[int, int], str] | None = None
    ) -> None:
        self._cost_of = cost_of
        self._parser = SSEParser()
        self._model = model
        self._include_usage = include_usage
        self._created = created
        self._id = "chatcmpl-anthropic"
        self._tools: dict[int, int] = {}  # Anthropic content block index -> OpenAI tool call index
        self._start_usage: dict[str, Any] = {}
        self._finish_sent = False
        self._ended = False
        self.usage: Usage | None = None
        self.text_parts: list[str] = []
        self.saw_done = False
        self.error: str | None = None

    def feed(self, data: bytes) -> bytes:
        out = [self._on(event) for event in self._parser.feed(data) if not self._ended]
        return b"".join(out)

    def _on(self, event: SSEEvent) -> bytes:
        payload = _loads_object(event.data) if event.data.lstrip().startswith("{") else None
        if payload is None:
            return b""
        kind = payload.get("type", event.event)
        if kind == "content_block_delta":
            return self._delta(payload)
        if kind == "message_start":
            return self._start(payload)
        if kind == "content_block_start":
            return self._block_start(payload)
        if kind == "message_delta":
            return self._message_delta(payload)
        if kind == "message_stop":
            return self._stop()
        if kind == "error":
            self._ended = True
            message, error_type = _error_fields(payload)
            self.error = error_type or "api_error"
            return error_event(message or "The upstream provider failed mid-stream.", self.error)
        return b""  # ping, content_block_stop, and event types added after this was written

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self._include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def _start(self, payload: dict[str, Any]) -> bytes:
        message = payload.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("id"), str):
                self._id = "chatcmpl-" + message["id"]
            if isinstance(message.get("usage"), dict):
                self._start_usage = message["usage"]
        return self._chunk({"role": "assistant", "content": ""})

    def _block_start(self, payload: dict[str, Any]) -> bytes:
        block, index = payload.get("content_block"), payload.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return b""
        if block.get("type") == "text" and isinstance(block.get("text"), str) and block["text"]:
            self.text_parts.append(block["text"])
            return self._chunk({"content": block["text"]})
        if block.get("type") != "tool_use":
            return b""
        position = self._tools[index] = len(self._tools)
        name = block.get("name")
        name = name if isinstance(name, str) else ""
        self.text_parts.append(name)
        call = {"index": position, "id": block.get("id"), "type": "function"}
        call["function"] = {"name": name, "arguments": ""}
        return self._chunk({"tool_calls": [call]})

    def _delta(self, payload: dict[str, Any]) -> bytes:
        delta = payload.get("delta")
        if not isinstance(delta, dict):
            return b""
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if not isinstance(text, str) or not text:
                return b""
            self.text_parts.append(text)
            return self._chunk({"content": text})
        if kind == "input_json_delta":
            fragment, index = delta.get("partial_json"), payload.get("index")
            position = self._tools.get(index) if isinstance(index, int) else None
            if not isinstance(fragment, str) or not fragment or position is None:
                return b""
            self.text_parts.append(fragment)
            return self._chunk({"tool_calls": [{"index": position, "function": {"arguments": fragment}}]})
        return b""  # thinking, signature and citation deltas: never requested

    def _message_delta(self, payload: dict[str, Any]) -> bytes:
        usage = payload.get("usage")
        if isinstance(usage, dict):
            # message_delta's counts are cumulative; input counts may be only in message_start.
            merged = {**self._start_usage, **{k: v for k, v in usage.items() if v is not None}}
            prompt, _, completion = _usage_numbers(merged)
            self.usage = Usage(prompt, completion)
            self._start_usage = merged
        delta = payload.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if self._finish_sent or reason is None:
            return b""
        self._finish_sent = True
        return self._chunk({}, FINISH_REASONS.get(str(reason), "stop"))

    def _stop(self) -> bytes:
        self._ended = True
        self.saw_done = True
        out = b"" if self._finish_sent else self._chunk({}, "stop")
        if self._include_usage and self.usage is not None:
            usage: dict[str, Any] = _openai_usage(self._start_usage)
            if self._cost_of is not None:  # first, as the OpenAI path's splice puts it
                cost = self._cost_of(self.usage.prompt_tokens, self.usage.completion_tokens)
                usage = {"cost": orjson.Fragment(cost.encode()), **usage}
            chunk = {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [],
                "usage": usage,
            }
            out += b"data: " + orjson.dumps(chunk) + b"\n\n"
        return out + _DONE
