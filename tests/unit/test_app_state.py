"""`AppState`: Starlette's State whose values are real attributes, so hot-path reads never fail a lookup first."""

from __future__ import annotations

import pytest

from aichat_gateway.server.app import AppState


def test_a_value_set_as_an_attribute_is_a_real_attribute_and_an_item() -> None:
    state = AppState()
    state.redis = "pool"
    assert vars(state)["redis"] == "pool"  # found by the normal lookup, not by State.__getattr__
    assert state.redis == "pool"
    assert state["redis"] == "pool"
    assert list(state) == ["redis"]


def test_replacing_a_value_replaces_it_everywhere() -> None:
    state = AppState()
    state.clock = 1
    state.clock = 2
    assert (state.clock, state["clock"]) == (2, 2)


def test_a_deleted_value_is_gone_from_both() -> None:
    state = AppState()
    state.tokens = object()
    del state.tokens
    assert "tokens" not in vars(state)
    assert len(state) == 0
    with pytest.raises(AttributeError, match="tokens"):
        _ = state.tokens


def test_a_missing_value_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="'AppState' object has no attribute 'nothing'"):
        _ = AppState().nothing
