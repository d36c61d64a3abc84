"""`marketplace/preferences.py`: the `provider` object of a request (and a key's defaults).

Strict parsing (every error names its field), field-by-field merging with the request winning,
and a JSON round trip for storing a key's defaults.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aichat_gateway.marketplace.errors import InvalidListing, InvalidPreferences
from aichat_gateway.marketplace.preferences import (
    MAX_LISTED_IDS,
    NO_PREFERENCES,
    MaxPrice,
    Preferences,
    Strategy,
    dump_preferences,
    merge,
    parse_preferences,
)

# ---- parsing: what is accepted --------------------------------------------------------------------


def test_no_provider_field_means_no_preferences() -> None:
    assert parse_preferences(None) == NO_PREFERENCES


def test_an_empty_object_means_no_preferences() -> None:
    assert parse_preferences({}) == NO_PREFERENCES


def test_a_full_object_is_parsed_field_by_field() -> None:
    parsed = parse_preferences(
        {
            "order": ["lst_b", "lst_a"],
            "only": ["lst_a", "lst_b", "lst_c"],
            "ignore": ["lst_d"],
            "sort": "latency",
            "max_price": {"prompt": "1.5", "completion": "6"},
            "allow_fallbacks": False,
        }
    )
    assert parsed == Preferences(
        order=("lst_b", "lst_a"),
        only=frozenset({"lst_a", "lst_b", "lst_c"}),
        ignore=frozenset({"lst_d"}),
        sort=Strategy.FASTEST,
        max_price=MaxPrice(prompt=1_500_000, completion=6_000_000),
        allow_fallbacks=False,
    )


@pytest.mark.parametrize(
    "sort, strategy",
    [
        ("price", Strategy.CHEAPEST),
        ("latency", Strategy.FASTEST),
        ("throughput", Strategy.LEAST_BUSY),
        ("load", Strategy.LEAST_BUSY),
        ("balanced", Strategy.BALANCED),
    ],
)
def test_each_sort_value_selects_its_strategy(sort: str, strategy: Strategy) -> None:
    assert parse_preferences({"sort": sort}).sort is strategy


def test_order_keeps_the_buyers_order() -> None:
    assert parse_preferences({"order": ["lst_3", "lst_1", "lst_2"]}).order == ("lst_3", "lst_1", "lst_2")


def test_a_price_cap_may_name_one_side_only() -> None:
    assert parse_preferences({"max_price": {"completion": "0.6"}}).max_price == MaxPrice(completion=600_000)


def test_a_zero_price_cap_is_allowed() -> None:
    assert parse_preferences({"max_price": {"prompt": "0"}}).max_price == MaxPrice(prompt=0)


def test_null_fields_count_as_not_set() -> None:
    body = {"order": None, "only": None, "ignore": None, "sort": None, "max_price": None, "allow_fallbacks": None}
    assert parse_preferences(body) == NO_PREFERENCES


def test_a_price_cap_with_every_side_null_is_no_cap() -> None:
    assert parse_preferences({"max_price": {"prompt": None}}).max_price is None


def test_an_empty_order_or_ignore_is_kept_so_it_can_clear_a_key_default() -> None:
    parsed = parse_preferences({"order": [], "ignore": []})
    assert (parsed.order, parsed.ignore) == ((), frozenset())


def test_the_longest_allowed_list_is_accepted() -> None:
    names = [f"lst_{i}" for i in range(MAX_LISTED_IDS)]
    assert parse_preferences({"ignore": names}).ignore == frozenset(names)


# ---- parsing: what is refused, and the field named ------------------------------------------------


@pytest.mark.parametrize(
    "value, param",
    [
        ("price", "provider"),
        (["lst_a"], "provider"),
        ({"ingore": ["lst_a"]}, "provider.ingore"),
        ({"require_parameters": True}, "provider.require_parameters"),
        ({"order": "lst_a"}, "provider.order"),
        ({"order": ["lst_a", "lst_a"]}, "provider.order"),
        ({"order": [7]}, "provider.order"),
        ({"order": [""]}, "provider.order"),
        ({"order": ["lst a"]}, "provider.order"),
        ({"order": ["x" * 65]}, "provider.order"),
        ({"only": []}, "provider.only"),
        ({"only": {"lst_a": True}}, "provider.only"),
        ({"ignore": [None]}, "provider.ignore"),
        ({"ignore": [f"lst_{i}" for i in range(MAX_LISTED_IDS + 1)]}, "provider.ignore"),
        ({"sort": "cheapest"}, "provider.sort"),
        ({"sort": "PRICE"}, "provider.sort"),
        ({"sort": 1}, "provider.sort"),
        ({"max_price": "1.5"}, "provider.max_price"),
        ({"max_price": {}}, "provider.max_price"),
        ({"max_price": {"request": "0.1"}}, "provider.max_price.request"),
        ({"max_price": {"prompt": 1.5}}, "provider.max_price.prompt"),
        ({"max_price": {"prompt": 2}}, "provider.max_price.prompt"),
        ({"max_price": {"completion": "-1"}}, "provider.max_price.completion"),
        ({"max_price": {"completion": "abc"}}, "provider.max_price.completion"),
        ({"max_price": {"prompt": "0.0000001"}}, "provider.max_price.prompt"),
        ({"max_price": {"prompt": "NaN"}}, "provider.max_price.prompt"),
        ({"max_price": {"prompt": "1e9"}}, "provider.max_price.prompt"),
        ({"allow_fallbacks": "false"}, "provider.allow_fallbacks"),
        ({"allow_fallbacks": 0}, "provider.allow_fallbacks"),
    ],
)
def test_a_malformed_field_is_refused_naming_it(value: object, param: str) -> None:
    with pytest.raises(InvalidPreferences) as caught:
        parse_preferences(value)
    assert caught.value.param == param
    assert param.removeprefix("provider.").split(".")[0] in caught.value.message


def test_the_error_is_an_invalid_listing_so_the_edge_answers_400() -> None:
    with pytest.raises(InvalidListing) as caught:
        parse_preferences({"sort": "fast"})
    assert caught.value.code == "invalid_provider_preferences"


# ---- merging ------------------------------------------------------------------------------------


def test_merging_nothing_over_defaults_keeps_the_defaults() -> None:
    defaults = Preferences(sort=Strategy.FASTEST, ignore=frozenset({"lst_a"}))
    assert merge(defaults, NO_PREFERENCES) == defaults


def test_merging_a_request_over_no_defaults_keeps_the_request() -> None:
    request = Preferences(order=("lst_a",))
    assert merge(NO_PREFERENCES, request) == request


@pytest.mark.parametrize(
    "field, default, chosen",
    [
        ("order", ("lst_a",), ("lst_b",)),
        ("only", frozenset({"lst_a"}), frozenset({"lst_b"})),
        ("ignore", frozenset({"lst_a"}), frozenset({"lst_b"})),
        ("sort", Strategy.CHEAPEST, Strategy.LEAST_BUSY),
        ("allow_fallbacks", True, False),
    ],
)
def test_the_request_wins_a_field_both_set(field: str, default: Any, chosen: Any) -> None:
    merged = merge(Preferences(**{field: default}), Preferences(**{field: chosen}))
    assert getattr(merged, field) == chosen


def test_a_default_survives_where_the_request_sets_other_fields() -> None:
    merged = merge(Preferences(ignore=frozenset({"lst_a"})), Preferences(sort=Strategy.FASTEST))
    assert merged == Preferences(ignore=frozenset({"lst_a"}), sort=Strategy.FASTEST)


def test_an_empty_request_list_clears_the_key_default() -> None:
    assert merge(Preferences(ignore=frozenset({"lst_a"})), Preferences(ignore=frozenset())).ignore == frozenset()


def test_price_caps_merge_side_by_side() -> None:
    merged = merge(Preferences(max_price=MaxPrice(prompt=1, completion=2)), Preferences(max_price=MaxPrice(prompt=5)))
    assert merged.max_price == MaxPrice(prompt=5, completion=2)


def test_a_request_price_cap_applies_when_the_key_has_none() -> None:
    merged = merge(Preferences(sort=Strategy.FASTEST), Preferences(max_price=MaxPrice(completion=9)))
    assert merged.max_price == MaxPrice(completion=9)


# ---- storing a key's defaults ------------------------------------------------------------------------

NAMES = st.text(alphabet="abcdefghij0123456789_", min_size=1, max_size=12).map(lambda s: "lst_" + s)
CAPS = st.none() | st.integers(0, 10_000 * 1_000_000)


@given(
    st.builds(
        Preferences,
        order=st.none() | st.lists(NAMES, unique=True, max_size=5).map(tuple),
        only=st.none() | st.frozensets(NAMES, min_size=1, max_size=5),
        ignore=st.none() | st.frozensets(NAMES, max_size=5),
        sort=st.none() | st.sampled_from(Strategy),
        max_price=st.none() | st.builds(MaxPrice, CAPS, CAPS).filter(lambda m: m != MaxPrice()),
        allow_fallbacks=st.none() | st.booleans(),
    )
)
def test_dumped_preferences_parse_back_to_the_same(preferences: Preferences) -> None:
    assert parse_preferences(dump_preferences(preferences)) == preferences


def test_dumped_prices_are_decimal_strings() -> None:
    assert dump_preferences(Preferences(max_price=MaxPrice(prompt=150_000))) == {"max_price": {"prompt": "0.150000"}}
