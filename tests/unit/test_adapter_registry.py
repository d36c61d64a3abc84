"""The adapter registry and error tree."""

from __future__ import annotations

import dataclasses

import pytest

from aichat_gateway.proxy.adapters import (
    ADAPTERS,
    KINDS,
    AdapterError,
    UnknownProvider,
    UnsupportedRequest,
    UntranslatableResponse,
    UpstreamRequest,
    adapter_for,
)
from aichat_gateway.proxy.adapters.anthropic import AnthropicAdapter
from aichat_gateway.proxy.adapters.openai import OpenAIAdapter


def test_openai_and_anthropic_are_registered_under_their_kind() -> None:
    assert isinstance(adapter_for("openai"), OpenAIAdapter)
    assert isinstance(adapter_for("anthropic"), AnthropicAdapter)
    assert all(adapter.kind == kind for kind, adapter in ADAPTERS.items())


def test_kinds_lists_the_registered_provider_kinds() -> None:
    assert set(KINDS) == {"openai", "anthropic"}


def test_an_unknown_kind_raises_unknown_provider_naming_the_provider_param() -> None:
    with pytest.raises(UnknownProvider, match="gemini") as caught:
        adapter_for("gemini")
    assert caught.value.param == "provider"


def test_the_registry_cannot_be_changed_at_run_time() -> None:
    with pytest.raises(TypeError):
        ADAPTERS["x"] = OpenAIAdapter()  # type: ignore[index]


def test_every_adapter_error_is_an_adapter_error_with_a_message_and_param() -> None:
    for kind in (UnsupportedRequest, UntranslatableResponse, UnknownProvider):
        error = kind("nope", param="n")
        assert isinstance(error, AdapterError)
        assert (error.message, error.param, str(error)) == ("nope", "n", "nope")


def test_an_upstream_request_is_immutable() -> None:
    request = UpstreamRequest("GET", "https://x", [])
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.url = "https://y"  # type: ignore[misc]


def test_every_listable_provider_kind_has_an_adapter() -> None:
    from aichat_gateway.marketplace.listings import PROVIDERS
    from aichat_gateway.proxy.adapters import KINDS

    assert set(PROVIDERS) == set(KINDS)
