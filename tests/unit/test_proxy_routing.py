"""The hot path's routing shell: speed snapshots and the `provider` field's errors."""

from __future__ import annotations

import pytest

from aichat_gateway.marketplace.preferences import NO_PREFERENCES, Preferences, Strategy
from aichat_gateway.marketplace.pricing import Price
from aichat_gateway.marketplace.router import RoutingContext, route
from aichat_gateway.marketplace.snapshot import ProviderKey, Route
from aichat_gateway.proxy.errors import InvalidRequest, ModelNotFound
from aichat_gateway.proxy.routing import SNAPSHOT_EVERY, SpeedBoard, request_preferences, why_none

BUYER = "8d2f5a56-0000-4000-8000-000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_speed_snapshot_is_reused_until_it_is_due_so_rankings_stay_memoised() -> None:
    clock = Clock()
    board = SpeedBoard(clock)
    board.observe("a", 100.0)
    first = board.snapshot()
    board.observe("a", 300.0)
    assert board.snapshot() is first
    clock.now += SNAPSHOT_EVERY
    second = board.snapshot()
    assert second is not first and second["a"].samples == 2


def test_an_unchanged_board_keeps_its_snapshot_however_much_time_passes() -> None:
    clock = Clock()
    board = SpeedBoard(clock)
    board.observe("a", 100.0)
    clock.now += SNAPSHOT_EVERY
    first = board.snapshot()
    clock.now += 10 * SNAPSHOT_EVERY
    assert board.snapshot() is first


def test_a_body_without_provider_has_no_preferences() -> None:
    assert request_preferences({"model": "m"}) is NO_PREFERENCES
    assert request_preferences({"model": "m", "provider": None}) is NO_PREFERENCES


def test_provider_preferences_are_parsed_from_the_body() -> None:
    assert request_preferences({"provider": {"sort": "price"}}).sort is Strategy.CHEAPEST


def test_a_bad_provider_field_is_a_400_naming_the_field() -> None:
    with pytest.raises(InvalidRequest) as caught:
        request_preferences({"provider": {"only": "not-a-list"}})
    assert caught.value.param == "provider.only"


def listing(i: int, seller: str) -> Route:
    return Route(f"id{i}", f"lst_{i}", "openai", "https://x", ProviderKey("k"), "m", "m", Price(1, 1), None, seller)


def test_a_buyer_whose_only_choice_is_their_own_listing_gets_404_naming_provider_and_why() -> None:
    decision = route(RoutingContext(candidates=(listing(0, BUYER),), now=0.0, buyer_id=BUYER))
    error = why_none(decision, "m")
    assert isinstance(error, ModelNotFound) and error.param == "provider"
    assert "your own listings are never routed to your requests" in error.message


def test_own_listings_and_preferences_that_exclude_the_rest_are_both_explained() -> None:
    only_own = Preferences(only=frozenset({"lst_0"}))
    candidates = (listing(0, BUYER), listing(1, "other"))
    decision = route(RoutingContext(candidates=candidates, now=0.0, buyer_id=BUYER, preferences=only_own))
    error = why_none(decision, "m")
    assert isinstance(error, ModelNotFound) and error.param == "provider"
    assert "provider preferences" in error.message and "your own listings" in error.message
