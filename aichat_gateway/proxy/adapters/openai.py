"""OpenAI and OpenAI-compatible providers: the pass-through adapter.

This is exactly what the hot path did before adapters existed, so wiring it in changes nothing:

- `base_url` is the API root the OpenAI SDK would take, including its version segment
  (`https://api.openai.com/v1`); paths are appended to it (`/chat/completions`, `/embeddings`,
  `/models`).
- The body is the buyer's, minus the gateway's own fields, with the provider's model name, and for
  streams `stream_options.include_usage` forced on (`inbound.upstream_payload`).
- The key goes in `Authorization: Bearer`.
- Answers pass through byte for byte (the caller still checks and masks them as before), and the
  stream translator is the relay's `StreamMeter`, which forwards the provider's bytes untouched
  and withholds the usage chunk unless the buyer asked for it.
"""

from __future__ import annotations

from typing import Any

import orjson

from aichat_gateway.proxy.adapters.base import UpstreamRequest, encode_body
from aichat_gateway.proxy.inbound import GATEWAY_FIELDS, upstream_payload
from aichat_gateway.proxy.relay import CostOf, StreamMeter
from aichat_gateway.proxy.sse import Usage

_JSON = b"application/json"
_SSE = b"text/event-stream"


def _headers(api_key: str, accept: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"authorization", b"Bearer " + api_key.encode()),
        (b"content-type", _JSON),
        (b"accept", accept),
    ]


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class OpenAIAdapter:
    """Stateless; one shared instance lives in `ADAPTERS["openai"]`."""

    __slots__ = ()
    kind = "openai"

    def chat_request(
        self, body: dict[str, Any], upstream_model: str, stream: bool, base_url: str, api_key: str
    ) -> UpstreamRequest:
        return UpstreamRequest(
            "POST",
            base_url + "/chat/completions",
            _headers(api_key, _SSE if stream else _JSON),
            encode_body(upstream_payload(body, upstream_model, stream)),
        )

    def embeddings_request(
        self, body: dict[str, Any], upstream_model: str, base_url: str, api_key: str
    ) -> UpstreamRequest:
        forwarded = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
        forwarded["model"] = upstream_model
        return UpstreamRequest("POST", base_url + "/embeddings", _headers(api_key, _JSON), encode_body(forwarded))

    def chat_response(self, status: int, content: bytes, model: str) -> bytes:
        """Pass-through: the provider already speaks OpenAI (the caller masks error bodies)."""
        return content

    def usage_of_response(self, content: bytes) -> Usage | None:
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            return None
        usage = answer.get("usage") if isinstance(answer, dict) else None
        if not isinstance(usage, dict):
            return None
        prompt = _count(usage.get("prompt_tokens"))
        if prompt is None:
            return None
        return Usage(prompt, _count(usage.get("completion_tokens")) or 0)

    def stream_translator(self, model: str, include_usage: bool, cost_of: CostOf | None = None) -> StreamMeter:
        return StreamMeter(forward_usage=include_usage, cost_of=cost_of)

    def validation_request(self, base_url: str, api_key: str) -> UpstreamRequest:
        headers = [(b"authorization", b"Bearer " + api_key.encode()), (b"accept", _JSON)]
        return UpstreamRequest("GET", base_url + "/models", headers)
