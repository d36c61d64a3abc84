"""A fast, deterministic OpenAI-compatible fake LLM server.

Why: demos, integration tests and load tests need an upstream that answers like OpenAI (shapes, SSE framing,
usage, tool calls, errors) without the network, without cost, and faster than the gateway in front of it, so
that a benchmark measures the gateway and not the upstream. Hence a raw ASGI app (no framework), orjson, and
stream frames built from cached byte fragments.

Behaviour is steered by `FakeUpstreamConfig` and, per request, by headers (headers only, never the body):
`x-fake-latency-ms`, `x-fake-chunks`, `x-fake-chunk-interval-ms`, `x-fake-error-rate`, `x-fake-error-status`,
`x-fake-report-usage` (0/1) and `x-fake-retry-after` (adds Retry-After to injected errors). So one server
serves a whole test session.

`x-fake-echo-key` (0/1) quotes the caller's key, as a careless provider might: a plain request gets a 400
whose message holds it, a stream one error event holding it (then `[DONE]`). `x-fake-reasoning-tokens`
adds that many reasoning tokens to the reported usage (completion_tokens and
`completion_tokens_details.reasoning_tokens`), and `x-fake-usage-delay-ms` makes a stream wait that long
between its last content chunk (with finish_reason) and the usage chunk with `[DONE]`, as reasoning models do.

Faults (for the gateway's fault tests): `x-fake-trickle-ms` sends a 200 answer one byte at a time, that many ms
apart (each stream frame, or the whole body of a plain answer); `x-fake-abort-after` closes the connection after
that many stream frames (plain answers: bytes of the body), so the answer never ends: no `[DONE]`, no end of the
chunked or content-length body (uvicorn logs "ASGI callable returned without completing response"; the stream
counts as cancelled); `x-fake-garbage` (0/1) answers 200 with a body that is not JSON, or a stream of malformed
SSE lines that never sends `[DONE]`. Errors injected by `error_rate` come first and are never garbled.

Replies are "fake reply word1 word2 ...", one word per stream chunk, `chunks` words in all; completion_tokens
is the number of words (a tool call counts as 1) and prompt_tokens is the characters of the message contents
// 4 + 1. A request with `tools` (and tool_choice other than "none") gets a call to the first tool (or the
one named by tool_choice) with arguments "{}".

Anthropic: `POST /v1/messages` speaks the Messages API with the same knobs and the same words
(`max_tokens` and the `anthropic-version` header required, `system` counted into the prompt; a request
with `tools` and tool_choice other than `{"type": "none"}` gets a `tool_use` of the first or the named
tool with input `{}`; report_usage=0 leaves usage out). A request to `/v1/messages`, or any request
carrying `anthropic-version`, is answered in Anthropic's dialect: the key is read from `x-api-key`,
errors have Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`) and `GET /v1/models`
lists Claude models.

Introspection: `GET /_fake/stats` and `POST /_fake/reset` (counters only; `in_flight` is a gauge and stays).
Only `/v1/*` requests are counted. A client leaving is noticed in paced streams (latency or chunk interval
set); an unpaced stream is written in one go and counts as completed. Stats live on the app object, so with
`serve(workers=n>1)` they are per worker process, and each worker draws errors from its own RNG seeded with
the same `seed`. Run it with `aichat-gateway fake-upstream` or `python -m aichat_gateway.fakeupstream`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import random
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import orjson
import uvicorn

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_CHUNKS = 100_000
MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "text-embedding-3-small")
CLAUDE_MODEL_IDS = ("claude-sonnet-4-5", "claude-3-5-haiku-latest")
CONFIG_ENV = "AICHAT_FAKE_UPSTREAM_CONFIG"  # how serve() hands the config to worker processes
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]
_DONE = b"data: [DONE]\n\n"
# What a broken provider (or a proxy in front of one) sends with a 200: not JSON, and not an event stream
# an OpenAI client can read (a line that is no SSE field, cut JSON, HTML), ending without `[DONE]`.
_GARBAGE_BODY = b"<html><body><h1>It works!</h1> this is not JSON</body></html>\n"
_GARBAGE_FRAMES = (
    b"this line is not server-sent events\n\n",
    b'data: {"id":"chatcmpl-garbage","object":"chat.completion.chunk","choices":[{"delta":{"content":\n\n',
    b"data: <html><body>502 Bad Gateway</body></html>\n\n",
)
_GARBAGE_LAST = b'data: {"choices": [}\n\n'
# Every stream frame is _HEAD % (id, created, model) + a tail that closes the JSON object (see _tail).
_HEAD = b'data: {"id":"chatcmpl-%s","object":"chat.completion.chunk","created":%d,"model":%s,'
_HEAD += b'"system_fingerprint":"fp_fake",'
_MODELS = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODEL_IDS],
    }
)
_CLAUDE_MODELS = orjson.dumps(
    {
        "data": [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in CLAUDE_MODEL_IDS
        ],
        "has_more": False,
        "first_id": CLAUDE_MODEL_IDS[0],
        "last_id": CLAUDE_MODEL_IDS[-1],
    }
)


@dataclass(frozen=True)
class FakeUpstreamConfig:
    latency_ms: float = 0.0
    chunks: int = 16
    chunk_interval_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    report_usage: bool = True
    require_key: str | None = None
    seed: int = 0
    retry_after: int | None = None
    trickle_ms: float = 0.0
    abort_after: int | None = None
    garbage: bool = False
    usage_delay_ms: float = 0.0
    reasoning_tokens: int = 0
    echo_key: bool = False

    def __post_init__(self) -> None:
        checks = {
            "latency_ms >= 0": self.latency_ms >= 0,
            "chunk_interval_ms >= 0": self.chunk_interval_ms >= 0,
            "trickle_ms >= 0": self.trickle_ms >= 0,
            "abort_after >= 0": self.abort_after is None or self.abort_after >= 0,
            "usage_delay_ms >= 0": self.usage_delay_ms >= 0,
            "reasoning_tokens >= 0": self.reasoning_tokens >= 0,
            f"0 <= chunks <= {MAX_CHUNKS}": 0 <= self.chunks <= MAX_CHUNKS,
            "0 <= error_rate <= 1": 0 <= self.error_rate <= 1,
            "400 <= error_status <= 599": 400 <= self.error_status <= 599,
        }
        if failed := [rule for rule, ok in checks.items() if not ok]:
            raise ValueError("need " + ", ".join(failed))


def _flag(raw: str) -> bool:
    return {"1": True, "true": True, "0": False, "false": False}[raw.strip().lower()]


# Knob -> parser. Each is a CLI option (--chunk-interval-ms) and a header (x-fake-chunk-interval-ms).
_KNOBS: dict[str, Callable[[str], Any]] = {
    "latency_ms": float,
    "chunks": int,
    "chunk_interval_ms": float,
    "error_rate": float,
    "error_status": int,
    "report_usage": _flag,
    "retry_after": int,
    "trickle_ms": float,
    "abort_after": int,
    "garbage": _flag,
    "usage_delay_ms": float,
    "reasoning_tokens": int,
    "echo_key": _flag,
}
_HEADER_KNOBS = {b"x-fake-" + name.replace("_", "-").encode(): (name, parse) for name, parse in _KNOBS.items()}


@dataclass
class FakeStats:
    requests: int = 0
    streams_started: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0
    in_flight: int = 0
    last_headers: Sequence[tuple[bytes, bytes]] | None = None
    last_body: Any = None

    def reset(self) -> None:
        self.requests = self.streams_started = self.streams_completed = self.streams_cancelled = 0
        self.last_headers = self.last_body = None

    def snapshot(self) -> dict[str, Any]:
        names = ("requests", "streams_started", "streams_completed", "streams_cancelled", "in_flight")
        answer: dict[str, Any] = {name: getattr(self, name) for name in names}
        answer["last_request"] = None
        if self.last_headers is not None:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.last_headers}
            for secret in ("authorization", "x-api-key"):
                if secret in headers:
                    headers[secret] = headers[secret][-4:]
            answer["last_request"] = {"headers": headers, "body": self.last_body}
        return answer


class Reject(Exception):
    """An OpenAI-shaped error answer."""

    _TYPES = {401: "invalid_request_error", 429: "requests"}
    _CODES = {401: "invalid_api_key", 404: "unknown_url", 429: "rate_limit_exceeded"}
    _ANTHROPIC_TYPES = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        529: "overloaded_error",
    }

    def __init__(self, status: int, message: str, param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.retry_after = status, message, param, retry_after

    def payload(self, anthropic: bool = False) -> bytes:
        if anthropic:
            fallback = "api_error" if self.status >= 500 else "invalid_request_error"
            error = {"type": self._ANTHROPIC_TYPES.get(self.status, fallback), "message": self.message}
            return orjson.dumps({"type": "error", "error": error})
        kind = self._TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        code = self._CODES.get(self.status)
        return orjson.dumps({"error": {"message": self.message, "type": kind, "param": self.param, "code": code}})


async def _send_bytes(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _write(send: Send, data: bytes, trickle_ms: float, watcher: asyncio.Task[None] | None, more: bool) -> bool:
    """Send `data` as one body message, or one byte every `trickle_ms` (False if the client left)."""
    if trickle_ms <= 0:
        await send({"type": "http.response.body", "body": data, "more_body": more})
        return True
    for i in range(len(data)):
        if watcher is not None:
            if i:
                await asyncio.wait({watcher}, timeout=trickle_ms / 1000)
            if watcher.done():
                return False
        await send({"type": "http.response.body", "body": data[i : i + 1], "more_body": True})
    if not more:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    return True


async def _send_answer(knobs: FakeUpstreamConfig, receive: Receive, send: Send, body: bytes) -> None:
    """A 200 plain answer as the fault knobs make it: garbage instead of JSON, trickled, cut short."""
    if knobs.garbage:
        body = _GARBAGE_BODY
    if knobs.trickle_ms <= 0 and knobs.abort_after is None:
        return await _send_bytes(send, 200, body, _JSON)
    headers = [*_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        if knobs.abort_after is not None and knobs.abort_after < len(body):
            # Returning before the declared length makes uvicorn close the connection.
            await _write(send, body[: knobs.abort_after], knobs.trickle_ms, watcher, more=True)
        else:
            await _write(send, body, knobs.trickle_ms, watcher, more=False)
    finally:
        watcher.cancel()


async def _read_json(receive: Receive) -> Any:
    parts: list[bytes] = []
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Reject(400, "Client disconnected while sending the body.")
        part = message.get("body", b"")
        size += len(part)
        if size > MAX_BODY_BYTES:
            raise Reject(413, f"Request body exceeds {MAX_BODY_BYTES} bytes.")
        parts.append(part)
        more = message.get("more_body", False)
    try:
        return orjson.loads(b"".join(parts))
    except orjson.JSONDecodeError:
        raise Reject(400, "We could not parse the JSON body of your request.") from None


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _words(count: int) -> list[str]:
    return [("fake", "reply")[i] if i < 2 else f"word{i - 1}" for i in range(count)]


def _prompt_tokens(messages: list[Any]) -> int:
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [{"text": content}]
        chars += sum(len(p["text"]) for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))
    return chars // 4 + 1


def _tool_name(body: dict[str, Any]) -> str | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        return str(choice["function"].get("name", "tool"))
    first = tools[0].get("function") if isinstance(tools[0], dict) else None
    return str(first.get("name", "tool")) if isinstance(first, dict) else "tool"


def _usage(prompt: int, completion: int, reasoning: int = 0) -> dict[str, Any]:
    """OpenAI's usage object; reasoning tokens are billed as completion tokens the answer never shows."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion + reasoning,
        "total_tokens": prompt + completion + reasoning,
    }
    if reasoning:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def _choice(delta: dict[str, Any], finish: str | None) -> list[dict[str, Any]]:
    return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]


def _tail(obj: dict[str, Any]) -> bytes:
    """JSON of obj without its opening brace: appended to a per-request prefix that opens the object."""
    return orjson.dumps(obj)[1:] + b"\n\n"


def _text_tails(chunks: int, with_usage: bool) -> list[bytes]:
    """Frame tails: the role chunk, then one chunk per word, the last one with finish_reason "stop"."""
    extra = {"usage": None} if with_usage else {}  # OpenAI sends "usage": null until the usage chunk
    deltas = [{"content": w if i == 0 else " " + w} for i, w in enumerate(_words(chunks))] or [{}]
    tails = [_tail({"choices": _choice({"role": "assistant", "content": ""}, None), **extra})]
    tails += [_tail({"choices": _choice(d, None), **extra}) for d in deltas[:-1]]
    return [*tails, _tail({"choices": _choice(deltas[-1], "stop"), **extra})]


def _tool_tails(call_id: str, tool: str, with_usage: bool) -> list[bytes]:
    extra = {"usage": None} if with_usage else {}
    call = {"index": 0, "id": call_id, "type": "function", "function": {"name": tool, "arguments": ""}}
    first = {"role": "assistant", "content": None, "tool_calls": [call]}
    args = {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}
    steps: list[tuple[dict[str, Any], str | None]] = [(first, None), (args, None), ({}, "tool_calls")]
    return [_tail({"choices": _choice(delta, finish), **extra}) for delta, finish in steps]


def _anthropic_tool(body: dict[str, Any]) -> str | None:
    tools, choice = body.get("tools"), body.get("tool_choice")
    choice = choice if isinstance(choice, dict) else {}
    if not isinstance(tools, list) or not tools or choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        return str(choice.get("name", "tool"))
    return str(tools[0].get("name", "tool")) if isinstance(tools[0], dict) else "tool"


def _anthropic_prompt_tokens(body: dict[str, Any]) -> int:
    return _prompt_tokens([{"content": body.get("system")}, *body["messages"]])


def _anthropic_message(answer_id: str, model: Any, content: list[Any], stop: str | None) -> dict[str, Any]:
    return {
        "id": "msg_" + answer_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
    }


def _event(name: str, payload: dict[str, Any]) -> bytes:
    """One Anthropic SSE event: `event:` names it and the data's `type` repeats the name."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **payload}) + b"\n\n"


class FakeUpstream:
    """The ASGI app. `stats` and the error RNG are per instance."""

    def __init__(self, config: FakeUpstreamConfig) -> None:
        self.config = config
        self.stats = FakeStats()
        self._rng = random.Random(config.seed)
        self._seq = 0
        # Precomputed for the configured chunk count; header overrides build theirs per request.
        self._content = " ".join(_words(config.chunks))
        self._tails = {(config.chunks, usage): _text_tails(config.chunks, usage) for usage in (False, True)}
        self._auth = f"Bearer {config.require_key}".encode() if config.require_key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path, stats = scope["method"], scope["path"], self.stats
        anthropic = path == "/v1/messages" or any(name == b"anthropic-version" for name, _ in scope["headers"])
        try:
            if path.startswith("/v1/"):
                stats.requests += 1
                stats.in_flight += 1
                stats.last_headers, stats.last_body = scope["headers"], None
                try:
                    await self._v1(method, path, scope["headers"], receive, send, anthropic)
                finally:
                    stats.in_flight -= 1
            elif (method, path) == ("GET", "/healthz"):
                await _send_bytes(send, 200, b'{"status":"ok"}', _JSON)
            elif (method, path) == ("GET", "/_fake/stats"):
                await _send_bytes(send, 200, orjson.dumps(stats.snapshot()), _JSON)
            elif (method, path) == ("POST", "/_fake/reset"):
                stats.reset()
                await _send_bytes(send, 200, b'{"status":"ok"}', _JSON)
            else:
                raise Reject(404, f"Unknown request URL: {method} {path}.")
        except Reject as err:
            headers = _JSON if err.retry_after is None else [*_JSON, (b"retry-after", b"%d" % err.retry_after)]
            await _send_bytes(send, err.status, err.payload(anthropic), headers)

    def _knobs(self, headers: Sequence[tuple[bytes, bytes]], anthropic: bool = False) -> FakeUpstreamConfig:
        overrides: dict[str, Any] = {}
        authorized = self._auth is None
        key_header = b"x-api-key" if anthropic else b"authorization"
        expected = self.config.require_key.encode() if anthropic and self.config.require_key else self._auth
        for name, value in headers:
            if name.startswith(b"x-fake-") and name in _HEADER_KNOBS:
                attr, parse = _HEADER_KNOBS[name]
                try:
                    overrides[attr] = parse(value.decode("latin-1"))
                except (ValueError, KeyError):
                    raise Reject(400, f"Bad value for header {name.decode()}.") from None
            elif name == key_header and expected is not None:
                authorized = hmac.compare_digest(value, expected)
        if not authorized:
            raise Reject(401, "invalid x-api-key" if anthropic else "Incorrect API key provided.")
        try:
            return replace(self.config, **overrides) if overrides else self.config
        except ValueError as exc:
            raise Reject(400, f"Bad x-fake-* header: {exc}.") from None

    async def _v1(
        self, method: str, path: str, headers: Any, receive: Receive, send: Send, anthropic: bool = False
    ) -> None:
        knobs = self._knobs(headers, anthropic)
        if path == "/v1/models":
            if method != "GET":
                raise Reject(405, "Method not allowed.")
            return await _send_bytes(send, 200, _CLAUDE_MODELS if anthropic else _MODELS, _JSON)
        if path == "/v1/messages":
            if method != "POST":
                raise Reject(405, "Method not allowed.")
            return await self._messages(knobs, headers, receive, send)
        if path not in ("/v1/chat/completions", "/v1/embeddings"):
            raise Reject(404, f"Unknown request URL: {method} {path}.")
        if method != "POST":
            raise Reject(405, "Method not allowed.")
        body = self.stats.last_body = await _read_json(receive)
        if not isinstance(body, dict):
            raise Reject(400, "The request body must be a JSON object.")
        if not isinstance(body.get("model"), str):
            raise Reject(400, "you must provide a model parameter", param="model")
        if path == "/v1/embeddings":
            answer = self._embeddings(body)
            await self._delay_and_maybe_fail(knobs, None)
            return await _send_answer(knobs, receive, send, answer)
        if not isinstance(body.get("messages"), list):
            raise Reject(400, "'messages' must be a list.", param="messages")
        if knobs.echo_key:
            key = dict(headers).get(b"authorization", b"").decode("latin-1").removeprefix("Bearer ")
            quoted = f"Your key {key} may not use model {body['model']}."
            if body.get("stream") is not True:
                raise Reject(400, quoted, param="model")
            error = b"data: " + orjson.dumps({"error": {"message": quoted, "type": "invalid_request_error"}}) + b"\n\n"
            return await self._stream(knobs, receive, send, lambda: (iter([error]), _DONE))
        if body.get("stream") is True:
            return await self._stream(knobs, receive, send, lambda: self._openai_frames(knobs, body))
        await self._delay_and_maybe_fail(knobs, None)
        await _send_answer(knobs, receive, send, self._completion(knobs, body))

    async def _delay_and_maybe_fail(self, knobs: FakeUpstreamConfig, watcher: asyncio.Task[None] | None) -> bool:
        """Sleep latency_ms (False if the client left meanwhile), then maybe raise the injected error."""
        if knobs.latency_ms > 0:
            if watcher is None:
                await asyncio.sleep(knobs.latency_ms / 1000)
            elif (await asyncio.wait({watcher}, timeout=knobs.latency_ms / 1000))[0]:
                return False
        if knobs.error_rate > 0 and (knobs.error_rate >= 1 or self._rng.random() < knobs.error_rate):
            message = f"Injected fake upstream error {knobs.error_status}."
            raise Reject(knobs.error_status, message, retry_after=knobs.retry_after)
        return True

    def _next_id(self) -> str:
        self._seq += 1
        return f"fake{os.getpid()}x{self._seq}"

    def _completion(self, knobs: FakeUpstreamConfig, body: dict[str, Any]) -> bytes:
        tool, answer_id = _tool_name(body), self._next_id()
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if tool is None:
            same = knobs.chunks == self.config.chunks
            message["content"] = self._content if same else " ".join(_words(knobs.chunks))
            finish, completion = "stop", knobs.chunks
        else:
            function = {"name": tool, "arguments": "{}"}
            call = {"id": "call_" + answer_id, "type": "function", "function": function}
            message["tool_calls"], finish, completion = [call], "tool_calls", 1
        answer: dict[str, Any] = {
            "id": "chatcmpl-" + answer_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        }
        if knobs.report_usage:
            answer["usage"] = _usage(_prompt_tokens(body["messages"]), completion, knobs.reasoning_tokens)
        return orjson.dumps(answer)

    async def _stream(
        self,
        knobs: FakeUpstreamConfig,
        receive: Receive,
        send: Send,
        frames: Callable[[], tuple[Iterable[bytes], bytes]],
    ) -> None:
        """Send `frames()` (built after the latency and the injected error): each paced by the chunk
        interval, then the last one, which ends the body. `abort_after` frames in, it stops instead."""
        # A paced stream (latency, chunk interval or trickle) waits on the client going away; an unpaced
        # one is written in one go (uvicorn's send only yields under back-pressure), so it skips the watcher.
        paced = knobs.latency_ms > 0 or knobs.chunk_interval_ms > 0 or knobs.trickle_ms > 0 or knobs.usage_delay_ms > 0
        watcher = asyncio.ensure_future(_wait_disconnect(receive)) if paced else None
        stats, started, finished = self.stats, False, False
        try:
            if not await self._delay_and_maybe_fail(knobs, watcher):
                return
            parts, last = (_GARBAGE_FRAMES, _GARBAGE_LAST) if knobs.garbage else frames()
            stats.streams_started += 1
            started = True
            await send({"type": "http.response.start", "status": 200, "headers": _SSE})
            interval, sent = knobs.chunk_interval_ms / 1000, 0
            for part in parts:
                if sent == knobs.abort_after:
                    return  # returning mid-body makes uvicorn close the connection
                if watcher is not None:
                    if sent and interval > 0:
                        await asyncio.wait({watcher}, timeout=interval)
                    if watcher.done():
                        return
                if not await _write(send, part, knobs.trickle_ms, watcher, more=True):
                    return
                sent += 1
            if sent == knobs.abort_after or (watcher is not None and watcher.done()):
                return
            if watcher is not None and knobs.usage_delay_ms > 0:  # the usage (and the end) come late
                await asyncio.wait({watcher}, timeout=knobs.usage_delay_ms / 1000)
                if watcher.done():
                    return
            finished = await _write(send, last, knobs.trickle_ms, watcher, more=False)
        finally:
            if watcher is not None:
                watcher.cancel()
            if finished:
                stats.streams_completed += 1
            elif started:
                stats.streams_cancelled += 1

    def _openai_frames(self, knobs: FakeUpstreamConfig, body: dict[str, Any]) -> tuple[Iterable[bytes], bytes]:
        options = body.get("stream_options")
        with_usage = knobs.report_usage and isinstance(options, dict) and options.get("include_usage") is True
        answer_id, tool = self._next_id(), _tool_name(body)
        model, created = orjson.dumps(body["model"]), int(time.time())
        head = _HEAD % (answer_id.encode(), created, model)
        if tool is not None:
            tails, completion = _tool_tails("call_" + answer_id, tool, with_usage), 1
        else:
            key = (knobs.chunks, with_usage)
            tails, completion = self._tails.get(key) or _text_tails(*key), knobs.chunks
        last = _DONE
        if with_usage:
            usage = _usage(_prompt_tokens(body["messages"]), completion, knobs.reasoning_tokens)
            last = head + _tail({"choices": [], "usage": usage}) + _DONE
        return (head + tail for tail in tails), last

    async def _messages(self, knobs: FakeUpstreamConfig, headers: Any, receive: Receive, send: Send) -> None:
        """Anthropic's `POST /v1/messages`."""
        if not any(name == b"anthropic-version" for name, _ in headers):
            raise Reject(400, "anthropic-version: header is required")
        body = self.stats.last_body = await _read_json(receive)
        if not isinstance(body, dict):
            raise Reject(400, "The request body must be a JSON object.")
        for field, kind in (("model", str), ("messages", list), ("max_tokens", int)):
            if not isinstance(body.get(field), kind) or isinstance(body.get(field), bool):
                raise Reject(400, f"{field}: Field required", param=field)
        if body["max_tokens"] < 1:
            raise Reject(400, "max_tokens: Input should be greater than or equal to 1", param="max_tokens")
        if body.get("stream") is True:
            return await self._stream(knobs, receive, send, lambda: self._anthropic_frames(knobs, body))
        await self._delay_and_maybe_fail(knobs, None)
        answer_id, tool = self._next_id(), _anthropic_tool(body)
        if tool is None:
            block: dict[str, Any] = {"type": "text", "text": " ".join(_words(knobs.chunks))}
            stop, completion = "end_turn", knobs.chunks
        else:
            block = {"type": "tool_use", "id": "toolu_" + answer_id, "name": tool, "input": {}}
            stop, completion = "tool_use", 1
        message = _anthropic_message(answer_id, body["model"], [block], stop)
        if knobs.report_usage:
            message["usage"] = {"input_tokens": _anthropic_prompt_tokens(body), "output_tokens": completion}
        await _send_answer(knobs, receive, send, orjson.dumps(message))

    def _anthropic_frames(self, knobs: FakeUpstreamConfig, body: dict[str, Any]) -> tuple[Iterable[bytes], bytes]:
        """message_start + content_block_start + ping, one content_block_delta per word (or the tool
        input), then content_block_stop + message_delta + message_stop."""
        answer_id, tool = self._next_id(), _anthropic_tool(body)
        message = _anthropic_message(answer_id, body["model"], [], None)
        if knobs.report_usage:
            message["usage"] = {"input_tokens": _anthropic_prompt_tokens(body), "output_tokens": 1}
        if tool is None:
            block: dict[str, Any] = {"type": "text", "text": ""}
            words = _words(knobs.chunks)
            deltas = [{"type": "text_delta", "text": w if i == 0 else " " + w} for i, w in enumerate(words)]
            stop, completion = "end_turn", knobs.chunks
        else:
            block = {"type": "tool_use", "id": "toolu_" + answer_id, "name": tool, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": "{}"}]
            stop, completion = "tool_use", 1
        first = _event("message_start", {"message": message})
        first += _event("content_block_start", {"index": 0, "content_block": block})
        first += _event("ping", {})
        frames = [first, *(_event("content_block_delta", {"index": 0, "delta": d}) for d in deltas)]
        finish: dict[str, Any] = {"delta": {"stop_reason": stop, "stop_sequence": None}}
        if knobs.report_usage:
            finish["usage"] = {"output_tokens": completion}
        last = _event("content_block_stop", {"index": 0}) + _event("message_delta", finish)
        return frames, last + _event("message_stop", {})

    def _embeddings(self, body: dict[str, Any]) -> bytes:
        raw = body.get("input")
        items: list[Any] = raw if isinstance(raw, list) and raw and not isinstance(raw[0], int) else [raw]
        if raw is None or raw == [] or not all(isinstance(i, str | list) for i in items):
            raise Reject(400, "'input' must be a string or a list of strings.", param="input")
        as_b64 = body.get("encoding_format") == "base64"
        data, tokens = [], 0
        for index, item in enumerate(items):
            key = item.encode() if isinstance(item, str) else orjson.dumps(item)
            tokens += len(item) // 4 + 1 if isinstance(item, str) else len(item)
            vector = [round((b - 127.5) / 127.5, 6) for b in hashlib.blake2b(key, digest_size=8).digest()]
            embedding: Any = base64.b64encode(struct.pack("<8f", *vector)).decode() if as_b64 else vector
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return orjson.dumps({"object": "list", "data": data, "model": body["model"], "usage": usage})


def create_app(config: FakeUpstreamConfig | None = None) -> FakeUpstream:
    """The app (an ASGI callable); `app.stats` is readable in-process too."""
    return FakeUpstream(config or FakeUpstreamConfig())


def app_from_env() -> FakeUpstream:
    """uvicorn factory for worker processes: the config travels in the environment as JSON."""
    return create_app(FakeUpstreamConfig(**orjson.loads(os.environ.get(CONFIG_ENV, "{}"))))


def serve(config: FakeUpstreamConfig, host: str = "127.0.0.1", port: int = 9100, workers: int = 1) -> None:
    options: dict[str, Any] = {"host": host, "port": port, "loop": "uvloop", "http": "httptools"}
    options |= {"log_level": "warning", "access_log": False}
    if workers > 1:  # uvicorn spawns workers from an import string; they read the config from the env
        os.environ[CONFIG_ENV] = orjson.dumps(asdict(config)).decode()
        uvicorn.run("aichat_gateway.fakeupstream:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(config), **options)


_CLI_KNOBS: dict[str, Callable[[str], Any]] = {
    **{k: v for k, v in _KNOBS.items() if k not in ("report_usage", "garbage", "echo_key")},
    "seed": int,
    "require_key": str,
}


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """The knobs, --no-usage, --garbage, and --host --port --workers unless the caller's parser already has them."""
    for flag, kind, default in (("--host", str, "127.0.0.1"), ("--port", int, 9100), ("--workers", int, 1)):
        try:
            parser.add_argument(flag, type=kind, default=default)
        except argparse.ArgumentError:
            pass  # the caller defined it
    for name, parse in _CLI_KNOBS.items():
        flag, default = "--" + name.replace("_", "-"), getattr(FakeUpstreamConfig, name)
        parser.add_argument(flag, type=parse, default=default, help=f"default: {default}")
    parser.add_argument("--no-usage", action="store_true", help="never report usage")
    parser.add_argument("--garbage", action="store_true", help="answer 200 with garbage (not JSON, bad SSE)")
    parser.add_argument("--echo-key", action="store_true", help="quote the caller's key in a 400 or a stream error")


def config_from_args(ns: argparse.Namespace) -> FakeUpstreamConfig:
    knobs = {name: getattr(ns, name) for name in _CLI_KNOBS}
    return FakeUpstreamConfig(report_usage=not ns.no_usage, garbage=ns.garbage, echo_key=ns.echo_key, **knobs)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m aichat_gateway.fakeupstream [options]`: as `aichat-gateway fake-upstream`."""
    parser = argparse.ArgumentParser(prog="fakeupstream", description="OpenAI-compatible fake LLM server")
    add_cli_arguments(parser)
    ns = parser.parse_args(argv)
    serve(config_from_args(ns), host=ns.host, port=ns.port, workers=ns.workers)


if __name__ == "__main__":
    main()
