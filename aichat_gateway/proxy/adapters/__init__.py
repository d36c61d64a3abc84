"""Provider adapters: one module per provider kind behind the small `Adapter` interface (base.py).

`adapter_for(listing.provider)` gives the stateless adapter of a listing's provider kind. Adding a
provider is one module implementing `Adapter` plus one line in `ADAPTERS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from aichat_gateway.proxy.adapters.anthropic import AnthropicAdapter
from aichat_gateway.proxy.adapters.base import (
    Adapter,
    AdapterError,
    StreamTranslator,
    UnknownProvider,
    UnsupportedRequest,
    UntranslatableResponse,
    UpstreamRequest,
)
from aichat_gateway.proxy.adapters.openai import OpenAIAdapter

__all__ = [
    "ADAPTERS",
    "KINDS",
    "Adapter",
    "AdapterError",
    "StreamTranslator",
    "UnknownProvider",
    "UnsupportedRequest",
    "UntranslatableResponse",
    "UpstreamRequest",
    "adapter_for",
]

ADAPTERS: Mapping[str, Adapter] = MappingProxyType({"openai": OpenAIAdapter(), "anthropic": AnthropicAdapter()})
KINDS: tuple[str, ...] = tuple(ADAPTERS)


def adapter_for(kind: str) -> Adapter:
    """The adapter for a listing's `provider`; raises UnknownProvider for a kind nobody registered."""
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise UnknownProvider(f"No adapter for provider kind {kind!r}.", param="provider") from None
