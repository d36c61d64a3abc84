"""The provider adapter interface: everything that differs between provider kinds, as pure functions.

The hot path speaks OpenAI to the buyer. An adapter turns the buyer's (already validated) OpenAI
request into the provider's HTTP request and the provider's answer back into OpenAI bytes. It does
no I/O: it builds `UpstreamRequest` values for the caller to send and translates bytes the caller
has read, so every adapter is tested without a network and the hot path keeps its single HTTP
client, failover and metering.

Adapters are stateless and shared (one instance per kind in `ADAPTERS`); per-stream state lives in
the `StreamTranslator` that `stream_translator` returns, one per stream, never shared between
tasks.

AdapterError                  (has `message` and `param`, like the gateway's own errors)
├── UnsupportedRequest        the buyer asked for something this provider cannot do -> 400 naming `param`
├── UntranslatableResponse    the provider answered something we cannot read -> 502
└── UnknownProvider           no adapter for a listing's provider kind (a bug or a stale listing)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from aichat_gateway.proxy.sse import Usage

__all__ = [
    "Adapter",
    "AdapterError",
    "StreamTranslator",
    "UnknownProvider",
    "UnsupportedRequest",
    "UntranslatableResponse",
    "UpstreamRequest",
    "Usage",
    "encode_body",
]


class AdapterError(Exception):
    """Base of the adapter error tree. `param` names the buyer's field at fault, when there is one."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class UnsupportedRequest(AdapterError):
    """The request cannot be expressed for this provider (n > 1, logprobs, an unsupported endpoint...)."""


class UntranslatableResponse(AdapterError):
    """The provider's successful answer is not something this adapter can read."""


class UnknownProvider(AdapterError):
    """No adapter is registered for this provider kind."""


def encode_body(payload: Mapping[str, Any]) -> bytes:
    """A provider request body as JSON. orjson reads 1024 levels of nesting but writes only 254, so a
    deeper value in an accepted body is refused here (400 naming the problem), not a 500."""
    try:
        # Copied to its exact size: orjson hands back a 4 KiB buffer however short the JSON, and
        # this body lives as long as the request (a whole stream): a large share of an open stream's memory.
        return memoryview(orjson.dumps(payload)).tobytes()
    except orjson.JSONEncodeError as exc:
        message = f"The request cannot be forwarded ({exc}): JSON nested deeper than 254 levels."
        raise UnsupportedRequest(message) from None


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """One HTTP request to send to a provider. `headers` carry the provider key: never log them."""

    method: str
    url: str
    headers: list[tuple[bytes, bytes]] = field(repr=False)
    body: bytes = field(default=b"", repr=False)


class StreamTranslator(Protocol):
    """Sans-I/O, per stream: fed the provider's raw stream bytes in arbitrary pieces, returns the
    OpenAI SSE bytes to send to the buyer for them (often b"" while an event is incomplete).

    `usage` is the provider's final token usage once it has reported it (None until then, and for
    a cut stream); `text_parts` is the generated text delivered so far (content, tool names and
    arguments), for counting when there is no usage; `saw_done` turns True when the provider ended
    the answer normally; `error` is set once the provider's own error event has been translated into
    an error event for the buyer (the relay then adds none of its own). `feed` raises only
    `sse.SSEError` (a line over the parser's limit): a malformed or unknown event is skipped, never fatal.
    """

    usage: Usage | None
    text_parts: list[str]
    saw_done: bool
    error: str | None

    def feed(self, data: bytes) -> bytes: ...


class Adapter(Protocol):
    """What the hot path needs to know about one provider kind (`kind` is the listing's `provider`).

    `base_url` is the listing's normalised base URL (no trailing slash); each adapter documents how
    it reads it. `body` is the buyer's parsed JSON body after `inbound.parse_chat_request` (or
    `parse_embeddings_request`) accepted it.
    """

    @property
    def kind(self) -> str: ...

    def chat_request(
        self, body: dict[str, Any], upstream_model: str, stream: bool, base_url: str, api_key: str
    ) -> UpstreamRequest:
        """The provider request for a chat completion; raises UnsupportedRequest."""
        ...

    def embeddings_request(
        self, body: dict[str, Any], upstream_model: str, base_url: str, api_key: str
    ) -> UpstreamRequest:
        """The provider request for embeddings; raises UnsupportedRequest if the kind has none."""
        ...

    def chat_response(self, status: int, content: bytes, model: str) -> bytes:
        """The OpenAI `chat.completion` JSON for the provider's complete answer (`content`, read
        with `status`); for status >= 400, an OpenAI error JSON. `model` is the name to show the
        buyer where the adapter builds the answer itself. Raises UntranslatableResponse when a
        2xx answer cannot be read."""
        ...

    def usage_of_response(self, content: bytes) -> Usage | None:
        """The token usage in the provider's own complete answer, or None. Never raises."""
        ...

    def stream_translator(
        self, model: str, include_usage: bool, cost_of: Callable[[int, int], str] | None = None
    ) -> StreamTranslator:
        """A fresh translator for one streamed answer; `include_usage` is the buyer's
        `stream_options.include_usage` (the usage chunk is sent to the buyer only then), and
        `cost_of(prompt, completion)` gives that chunk's `usage.cost` (USD decimal string)."""
        ...

    def validation_request(self, base_url: str, api_key: str) -> UpstreamRequest:
        """A cheap authenticated request (a model listing) to check a key when it is listed."""
        ...
