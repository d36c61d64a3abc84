"""`marketplace/router.py`: each strategy's order, each filter, tie-breaks, exclusions, memoisation.

Pure: plain data in, a decision out. Candidates are built with `listing(i, input, output)`:
listing id `id<i>`, public id `lst_<i>`, prices in micro-USD per million tokens. `decide` routes
with throwaway tables unless a test passes `tables=` (the memo the snapshot's `Index` owns).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from aichat_gateway.marketplace.preferences import MaxPrice, Preferences, Strategy
from aichat_gateway.marketplace.pricing import Price
from aichat_gateway.marketplace.router import (
    DEFAULT_COMPLETION_TOKENS,
    Exclusion,
    FrozenMapping,
    RouteTables,
    RoutingContext,
    RoutingDecision,
    SpeedStats,
    observe,
    order_routes,
    route,
)
from aichat_gateway.marketplace.snapshot import Index, ProviderKey, Route

NOW = 1_000.0


def listing(i: int, inp: int = 100, out: int = 100) -> Route:
    return Route(f"id{i}", f"lst_{i}", "openai", "https://x", ProviderKey("k"), "m", "m", Price(inp, out))


def decide(
    candidates: list[Route] | tuple[Route, ...], tables: RouteTables | None = None, **fields: Any
) -> RoutingDecision:
    cands = tables.routes if tables is not None else tuple(candidates)
    return route(RoutingContext(candidates=cands, now=fields.pop("now", NOW), **fields), tables)


def order(candidates: list[Route] | tuple[Route, ...], **fields: Any) -> list[int]:
    """Listing numbers in routing order."""
    return [int(r.listing_id[2:]) for r in decide(candidates, **fields).routes]


def fast(ms: float, samples: int = 10) -> SpeedStats:
    return SpeedStats(ms, samples)


# ---- cheapest ------------------------------------------------------------------------------------


def test_cheapest_puts_the_lowest_expected_cost_first() -> None:
    cands = [listing(0, 300, 300), listing(1, 100, 100), listing(2, 200, 200)]
    assert order(cands, default_strategy=Strategy.CHEAPEST) == [1, 2, 0]


def test_cheapest_weighs_input_price_by_the_prompt_and_output_price_by_max_tokens() -> None:
    cheap_in, cheap_out = listing(0, 100, 900), listing(1, 900, 100)
    long_prompt = {"prompt_tokens_estimate": 10_000, "max_tokens": 10}
    long_answer = {"prompt_tokens_estimate": 10, "max_tokens": 10_000}
    assert order([cheap_in, cheap_out], default_strategy=Strategy.CHEAPEST, **long_prompt) == [0, 1]
    assert order([cheap_in, cheap_out], default_strategy=Strategy.CHEAPEST, **long_answer) == [1, 0]


def test_cheapest_without_max_tokens_expects_the_default_completion_size() -> None:
    # Costs at 1,000 prompt tokens: a = 1000*100 + M*300, b = 1000*400 + M*1: b wins iff M > ~1003.
    a, b = listing(0, 100, 300), listing(1, 400, 1)
    expected = [1, 0] if DEFAULT_COMPLETION_TOKENS * 299 > 1000 * 300 else [0, 1]
    assert order([a, b], default_strategy=Strategy.CHEAPEST, prompt_tokens_estimate=1000) == expected


def test_cheapest_with_only_a_few_wanted_still_finds_the_cheapest_among_many() -> None:
    cands = [listing(i, 1_000 + (i * 7919) % 1000, 1_000 + (i * 104729) % 997) for i in range(500)]
    full = order(cands, default_strategy=Strategy.CHEAPEST, seed=3)
    assert order(cands, default_strategy=Strategy.CHEAPEST, seed=3, limit=5) == full[:5]


# ---- fastest -------------------------------------------------------------------------------------


def test_fastest_puts_the_lowest_time_to_first_token_first() -> None:
    stats = {"id0": fast(900), "id1": fast(150), "id2": fast(400)}
    assert order([listing(0), listing(1), listing(2)], default_strategy=Strategy.FASTEST, stats=stats) == [1, 2, 0]


def test_fastest_gives_a_listing_without_stats_the_fastest_known_time_so_it_gets_traffic() -> None:
    stats = {"id0": fast(900), "id1": fast(150)}
    firsts = Counter(
        order([listing(0), listing(1), listing(2)], default_strategy=Strategy.FASTEST, stats=stats, seed=s)[0]
        for s in range(100)
    )
    assert firsts == {1: 50, 2: 50}


def test_fastest_treats_stats_with_too_few_samples_as_unknown() -> None:
    stats = {"id0": fast(150), "id1": fast(10, samples=1)}
    firsts = {
        order([listing(0), listing(1)], default_strategy=Strategy.FASTEST, stats=stats, seed=s)[0] for s in (0, 1)
    }
    assert firsts == {0, 1}  # the one-sample listing ties with the fastest known, it does not beat it


def test_fastest_ranks_a_listing_with_a_nan_time_as_unknown() -> None:
    stats = {"id0": fast(150), "id1": fast(float("nan")), "id2": fast(300)}
    assert order([listing(0), listing(1), listing(2)], default_strategy=Strategy.FASTEST, stats=stats, seed=0)[2] == 2


def test_observe_starts_an_ewma_and_moves_it_a_fifth_of_the_way_to_each_new_sample() -> None:
    first = observe(None, 100.0)
    assert first == SpeedStats(100.0, 1)
    assert observe(first, 200.0) == SpeedStats(120.0, 2)


# ---- least busy ----------------------------------------------------------------------------------


def test_least_busy_puts_the_least_utilised_first() -> None:
    load = {"id0": 0.9, "id1": 0.1, "id2": 0.5}
    assert order([listing(0), listing(1), listing(2)], default_strategy=Strategy.LEAST_BUSY, utilisation=load) == [
        1,
        2,
        0,
    ]


def test_least_busy_treats_a_listing_without_utilisation_as_idle() -> None:
    load = {"id0": 0.2}
    assert order([listing(0), listing(1)], default_strategy=Strategy.LEAST_BUSY, utilisation=load) == [1, 0]


def test_least_busy_clamps_utilisation_so_out_of_range_values_tie_with_the_bounds() -> None:
    load = {"id0": 1.7, "id1": 1.0, "id2": -3.0, "id3": 0.0}
    cands = [listing(i) for i in range(4)]
    assert order(cands, utilisation=load, default_strategy=Strategy.LEAST_BUSY, seed=0) == [2, 3, 0, 1]
    assert order(cands, utilisation=load, default_strategy=Strategy.LEAST_BUSY, seed=1) == [3, 2, 1, 0]


# ---- balanced ------------------------------------------------------------------------------------


def test_balanced_is_the_default_strategy() -> None:
    assert decide([listing(0)]).strategy is Strategy.BALANCED


def test_balanced_prefers_a_slightly_dearer_listing_that_is_much_faster_and_idle() -> None:
    cheap_slow_busy, dear_fast_idle = listing(0, 100, 100), listing(1, 110, 110)
    stats = {"id0": fast(2_000), "id1": fast(200)}
    load = {"id0": 0.9, "id1": 0.0}
    assert order([cheap_slow_busy, dear_fast_idle], stats=stats, utilisation=load) == [1, 0]


def test_balanced_prefers_a_much_cheaper_listing_that_is_a_little_slower() -> None:
    cheap, dear = listing(0, 100, 100), listing(1, 1_000, 1_000)
    stats = {"id0": fast(300), "id1": fast(250)}
    assert order([cheap, dear], stats=stats) == [0, 1]


def test_balanced_score_is_the_documented_weighted_sum_of_penalties() -> None:
    # a: price penalty 0, speed 1 - 100/400 = 0.75, load 0.2 -> 0.3*0.75 + 0.2*0.2 = 0.265
    # b: price 1 - 100/200 = 0.5, speed 0, load 0 -> 0.5*0.5 = 0.25: b first, although dearer.
    # c: price 0.5, speed 0.75, load 0 -> 0.25 + 0.225 = 0.475: last.
    a, b, c = listing(0, 100, 100), listing(1, 200, 200), listing(2, 200, 200)
    stats = {"id0": fast(400), "id1": fast(100), "id2": fast(400)}
    assert order([a, b, c], stats=stats, utilisation={"id0": 0.2}) == [1, 0, 2]


def test_balanced_price_penalty_follows_the_token_mix() -> None:
    cheap_in, cheap_out = listing(0, 100, 1_000), listing(1, 1_000, 100)
    assert order([cheap_in, cheap_out], prompt_tokens_estimate=50_000, max_tokens=10) == [0, 1]
    assert order([cheap_in, cheap_out], prompt_tokens_estimate=10, max_tokens=50_000) == [1, 0]


def test_balanced_counts_a_free_listing_as_cheapest() -> None:
    assert order([listing(0, 5, 5), listing(1, 0, 0)]) == [1, 0]


# ---- filters -------------------------------------------------------------------------------------


def test_a_listing_with_an_open_breaker_is_not_tried() -> None:
    assert order([listing(0), listing(1)], open_breakers={"id0"}) == [1]


def test_a_breaker_for_a_listing_of_another_model_changes_nothing() -> None:
    assert sorted(order([listing(0), listing(1)], open_breakers={"elsewhere"})) == [0, 1]


@pytest.mark.parametrize("until, excluded", [(NOW + 1, True), (NOW, False), (NOW - 1, False)])
def test_a_listing_out_of_capacity_is_skipped_only_while_its_cooling_time_is_ahead(
    until: float, excluded: bool
) -> None:
    assert (0 not in order([listing(0), listing(1)], exhausted_until={"id0": until})) is excluded


def test_many_open_breakers_and_exhausted_listings_are_all_skipped() -> None:
    cands = [listing(i, 100 + i, 100 + i) for i in range(40)]
    broken = {f"id{i}" for i in range(0, 40, 2)} | {f"other{i}" for i in range(100)}
    cooling = {f"id{i}": NOW + 5 for i in range(1, 40, 4)} | {f"other{i}": NOW + 5 for i in range(100)}
    ranked = order(cands, open_breakers=broken, exhausted_until=cooling, default_strategy=Strategy.CHEAPEST, limit=3)
    assert ranked == [3, 7, 11]


def test_max_price_excludes_listings_above_either_cap() -> None:
    caps = Preferences(max_price=MaxPrice(prompt=200, completion=200))
    cands = [listing(0, 100, 100), listing(1, 300, 100), listing(2, 100, 300), listing(3, 200, 200)]
    assert sorted(order(cands, preferences=caps)) == [0, 3]


def test_a_price_cap_on_one_side_leaves_the_other_side_free() -> None:
    caps = Preferences(max_price=MaxPrice(prompt=200))
    assert sorted(order([listing(0, 100, 10_000), listing(1, 300, 1)], preferences=caps)) == [0]


# ---- ties ----------------------------------------------------------------------------------------


def test_the_same_seed_always_gives_the_same_order() -> None:
    cands = [listing(i) for i in range(10)]
    assert order(cands, seed=12345) == order(cands, seed=12345)


def test_tied_listings_are_in_candidate_order_rotated_by_the_seed() -> None:
    cands = [listing(i) for i in range(4)]
    assert order(cands, seed=0) == [0, 1, 2, 3]
    assert order(cands, seed=6) == [2, 3, 0, 1]


def test_each_tied_listing_goes_first_for_an_equal_share_of_seeds() -> None:
    cands = [listing(0, 50, 50)] + [listing(i) for i in range(1, 5)]
    firsts = Counter(order(cands, open_breakers={"id0"}, seed=s)[0] for s in range(400))
    assert firsts == {1: 100, 2: 100, 3: 100, 4: 100}


def test_a_big_idle_market_spreads_first_choices_evenly() -> None:
    cands = tuple(listing(i) for i in range(100))
    firsts = Counter(order(cands, default_strategy=Strategy.LEAST_BUSY, limit=3, seed=s)[0] for s in range(1_000))
    assert set(firsts.values()) == {10}


# ---- preferences ---------------------------------------------------------------------------------


def test_order_puts_the_named_listings_first_in_the_given_order() -> None:
    cands = [listing(i, 100 * (i + 1), 100) for i in range(4)]
    prefs = Preferences(order=("lst_3", "lst_1"))
    assert order(cands, preferences=prefs, default_strategy=Strategy.CHEAPEST) == [3, 1, 0, 2]


def test_order_skips_names_that_do_not_serve_the_model() -> None:
    prefs = Preferences(order=("lst_99", "lst_1"))
    assert order([listing(0, 1, 1), listing(1, 9, 9)], preferences=prefs)[0] == 1


def test_order_skips_a_named_listing_whose_breaker_is_open() -> None:
    prefs = Preferences(order=("lst_1", "lst_2"))
    assert order([listing(0, 1, 1), listing(1), listing(2)], preferences=prefs, open_breakers={"id1"})[0] == 2


def test_only_restricts_routing_to_the_allow_list() -> None:
    prefs = Preferences(only=frozenset({"lst_1", "lst_3"}))
    assert sorted(order([listing(i) for i in range(5)], preferences=prefs)) == [1, 3]


def test_ignore_keeps_a_listing_out_whatever_its_score() -> None:
    prefs = Preferences(ignore=frozenset({"lst_0"}))
    assert order([listing(0, 1, 1), listing(1, 9, 9)], preferences=prefs) == [1]


@pytest.mark.parametrize(
    "sort, expected",
    [
        (Strategy.CHEAPEST, [0, 1, 2]),  # listing 0 is the cheapest
        (Strategy.FASTEST, [1, 2, 0]),  # listing 1 is the fastest
        (Strategy.LEAST_BUSY, [2, 0, 1]),  # listing 2 is idle
    ],
)
def test_sort_selects_the_strategy(sort: Strategy, expected: list[int]) -> None:
    cands = [listing(0, 100, 100), listing(1, 200, 200), listing(2, 300, 300)]
    stats = {"id0": fast(900), "id1": fast(100), "id2": fast(500)}
    load = {"id0": 0.5, "id1": 0.9, "id2": 0.0}
    decision = decide(cands, preferences=Preferences(sort=sort), stats=stats, utilisation=load)
    assert decision.strategy is sort
    assert [int(r.listing_id[2:]) for r in decision.routes] == expected


def test_a_key_default_applies_when_the_request_says_nothing() -> None:
    defaults = Preferences(sort=Strategy.FASTEST)
    assert decide([listing(0)], key_defaults=defaults).strategy is Strategy.FASTEST


def test_the_request_overrides_the_key_default() -> None:
    decision = decide(
        [listing(0)], key_defaults=Preferences(sort=Strategy.FASTEST), preferences=Preferences(sort=Strategy.CHEAPEST)
    )
    assert decision.strategy is Strategy.CHEAPEST


def test_a_key_default_deny_list_applies_to_requests_without_one() -> None:
    defaults = Preferences(ignore=frozenset({"lst_0"}))
    assert order([listing(0), listing(1)], key_defaults=defaults, preferences=Preferences(sort=Strategy.CHEAPEST)) == [
        1
    ]


def test_without_fallbacks_only_the_first_choice_is_returned() -> None:
    cands = [listing(0, 300, 300), listing(1, 100, 100), listing(2, 200, 200)]
    prefs = Preferences(allow_fallbacks=False, sort=Strategy.CHEAPEST)
    assert order(cands, preferences=prefs) == [1]


def test_without_fallbacks_and_with_an_order_the_first_available_order_listing_is_returned() -> None:
    cands = [listing(0, 1, 1), listing(1), listing(2)]
    prefs = Preferences(order=("lst_1", "lst_2"), allow_fallbacks=False)
    assert order(cands, preferences=prefs, open_breakers={"id1"}) == [2]


def test_without_fallbacks_nothing_is_returned_when_no_order_listing_is_available() -> None:
    prefs = Preferences(order=("lst_1",), allow_fallbacks=False)
    assert order([listing(0), listing(1)], preferences=prefs, open_breakers={"id1"}) == []


def test_limit_returns_only_that_many_routes() -> None:
    assert len(decide([listing(i) for i in range(10)], limit=3).routes) == 3


# ---- the buyer's own listings --------------------------------------------------------------------

BUYER = "8d2f5a56-0000-4000-8000-000000000001"


def owned(i: int, seller: str = BUYER, inp: int = 100, out: int = 100) -> Route:
    return replace(listing(i, inp, out), seller_id=seller)


def test_the_buyers_own_listing_is_never_routed_to_them_however_cheap() -> None:
    cands = [owned(0, inp=1, out=1), owned(1, "another-seller"), listing(2, 500, 500)]
    assert order(cands, buyer_id=BUYER, default_strategy=Strategy.CHEAPEST) == [1, 2]


@pytest.mark.parametrize("strategy", list(Strategy))
def test_own_listings_are_skipped_by_every_strategy(strategy: Strategy) -> None:
    cands = [owned(i) if i % 2 else listing(i) for i in range(8)]
    assert sorted(order(cands, buyer_id=BUYER, default_strategy=strategy)) == [0, 2, 4, 6]


def test_own_listings_are_skipped_on_memoised_rankings_too() -> None:
    index = Index({"m": tuple(owned(i) if i < 3 else listing(i, 100 + i, 100) for i in range(6))})
    tables = index.tables_for("m")
    stats = FrozenMapping({"id0": fast(1), "id1": fast(2)})
    for strategy in Strategy:
        decision = decide((), tables=tables, buyer_id=BUYER, stats=stats, default_strategy=strategy, limit=2)
        assert {r.seller_id for r in decision.routes} == {""}, strategy


def test_naming_an_own_listing_in_only_order_or_the_keys_defaults_does_not_route_to_it() -> None:
    cands = [owned(0), listing(1)]
    assert order(cands, buyer_id=BUYER, preferences=Preferences(only=frozenset({"lst_0"}))) == []
    assert order(cands, buyer_id=BUYER, preferences=Preferences(order=("lst_0",), allow_fallbacks=False)) == []
    assert order(cands, buyer_id=BUYER, preferences=Preferences(order=("lst_0",))) == [1]
    assert order(cands, buyer_id=BUYER, key_defaults=Preferences(only=frozenset({"lst_0"}))) == []


def test_own_listing_is_the_reason_given_over_every_other() -> None:
    decision = decide(
        [owned(0, inp=999), listing(1)],
        buyer_id=BUYER,
        preferences=Preferences(only=frozenset({"lst_1"}), ignore=frozenset({"lst_0"}), max_price=MaxPrice(500)),
        open_breakers={"id0"},
        exhausted_until={"id0": NOW + 5},
    )
    assert decision.excluded() == {"id0": Exclusion.OWN_LISTING}


def test_without_a_buyer_id_no_listing_counts_as_own() -> None:
    assert order([listing(0), listing(1)]) != []  # listings without a seller id are nobody's


def test_no_candidates_give_no_routes() -> None:
    assert decide([]).routes == ()


# ---- exclusions ----------------------------------------------------------------------------------


def test_excluded_names_each_reason() -> None:
    cands = [listing(i) for i in range(5)] + [listing(5, 999, 1)]
    decision = decide(
        cands,
        preferences=Preferences(
            only=frozenset({"lst_1", "lst_2", "lst_3", "lst_4", "lst_5"}),
            ignore=frozenset({"lst_1"}),
            max_price=MaxPrice(prompt=500),
        ),
        open_breakers={"id2"},
        exhausted_until={"id3": NOW + 10},
    )
    assert decision.excluded() == {
        "id0": Exclusion.NOT_IN_ONLY,
        "id1": Exclusion.IGNORED,
        "id2": Exclusion.BREAKER_OPEN,
        "id3": Exclusion.CAPACITY_EXHAUSTED,
        "id5": Exclusion.OVER_MAX_PRICE,
    }
    assert [r.listing_id for r in decision.routes] == ["id4"]


def test_the_buyers_deny_list_is_the_reason_given_over_an_open_breaker() -> None:
    decision = decide([listing(0)], preferences=Preferences(ignore=frozenset({"lst_0"})), open_breakers={"id0"})
    assert decision.excluded() == {"id0": Exclusion.IGNORED}


def test_an_open_breaker_is_the_reason_given_over_exhausted_capacity() -> None:
    decision = decide([listing(0)], open_breakers={"id0"}, exhausted_until={"id0": NOW + 1})
    assert decision.excluded() == {"id0": Exclusion.BREAKER_OPEN}


def test_without_fallbacks_the_rest_are_reported_as_fallbacks_disabled() -> None:
    decision = decide([listing(0, 1, 1), listing(1)], preferences=Preferences(allow_fallbacks=False))
    assert decision.excluded() == {"id1": Exclusion.FALLBACKS_DISABLED}


def test_listings_beyond_the_limit_are_not_reported_as_excluded() -> None:
    assert decide([listing(i) for i in range(5)], limit=1).excluded() == {}


# ---- memoisation ---------------------------------------------------------------------------------


def test_a_new_frozen_stats_snapshot_changes_the_order() -> None:
    cands = (listing(0), listing(1))
    tables = RouteTables(cands)
    before = FrozenMapping({"id0": fast(100), "id1": fast(900)})
    after = FrozenMapping({"id0": fast(900), "id1": fast(100)})
    assert order(cands, tables=tables, stats=before, default_strategy=Strategy.FASTEST) == [0, 1]
    assert order(cands, tables=tables, stats=after, default_strategy=Strategy.FASTEST) == [1, 0]


def test_a_plain_dict_is_read_afresh_on_every_call_even_when_changed_in_place() -> None:
    cands = (listing(0), listing(1))
    tables = RouteTables(cands)
    load = {"id0": 0.1, "id1": 0.9}
    assert order(cands, tables=tables, utilisation=load, default_strategy=Strategy.LEAST_BUSY) == [0, 1]
    load["id0"] = 1.0
    assert order(cands, tables=tables, utilisation=load, default_strategy=Strategy.LEAST_BUSY) == [1, 0]
    assert tables.rankings == {}


def test_a_ranking_over_frozen_signals_is_built_once_and_reused_by_later_requests() -> None:
    tables = RouteTables(tuple(listing(i, 100 + i % 7, 100) for i in range(50)))
    stats = FrozenMapping({f"id{i}": fast(100 + (i * 37) % 400) for i in range(50)})
    first = decide((), tables=tables, stats=stats, seed=1, limit=3)
    (ranking,) = tables.rankings.values()
    again = decide((), tables=tables, stats=stats, seed=1, limit=3, max_tokens=DEFAULT_COMPLETION_TOKENS)
    assert first.routes == again.routes == decide(tables.routes, stats=dict(stats), seed=1, limit=3).routes
    assert list(tables.rankings.values()) == [ranking]


def test_a_frozen_mapping_is_a_copy_that_cannot_be_changed() -> None:
    source = {"id0": 0.5}
    frozen = FrozenMapping(source)
    source["id0"] = 1.0
    assert frozen["id0"] == 0.5 and dict(frozen) == {"id0": 0.5}
    assert not hasattr(frozen, "__setitem__") and hash(frozen) == hash(FrozenMapping({"id0": 0.5}))


# ---- compatibility ---------------------------------------------------------------------------------


def test_order_routes_puts_the_lowest_input_plus_output_price_first() -> None:
    cands = (listing(0, 500, 500), listing(1, 100, 800), listing(2, 400, 400))
    assert [r.listing_id for r in order_routes(cands, 0)] == ["id2", "id1", "id0"]


def test_order_routes_returns_every_route_and_accepts_a_list() -> None:
    cands = [listing(i, i, i) for i in range(30)]
    assert order_routes(cands, 7) == cands


def test_order_routes_with_the_snapshots_tables_gives_the_same_order() -> None:
    index = Index({"m": tuple(listing(i, i % 3, i % 5) for i in range(40))})
    assert order_routes(index.routes_for("m"), 5, index.tables_for("m")) == order_routes(index.routes_for("m"), 5)


# ---- who owns the memo -----------------------------------------------------------------------------


def test_a_rebuilt_snapshot_changes_no_decision() -> None:
    cands = tuple(listing(i, i % 3, i % 5) for i in range(40))
    old, rebuilt = Index({"m": cands}), Index({"m": cands})
    before = order(cands, tables=old.tables_for("m"), default_strategy=Strategy.CHEAPEST, limit=4, seed=9)
    assert rebuilt.tables_for("m") is not old.tables_for("m")
    assert order(cands, tables=rebuilt.tables_for("m"), default_strategy=Strategy.CHEAPEST, limit=4, seed=9) == before
    assert order(cands, default_strategy=Strategy.CHEAPEST, limit=4, seed=9) == before


def test_the_index_builds_a_models_tables_once_over_the_very_routes_it_serves() -> None:
    index = Index({"m": (listing(0), listing(1)), "n": (listing(2),)})
    tables = index.tables_for("m")
    assert index.tables_for("m") is tables and tables.routes is index.routes_for("m")
    assert index.tables_for("n").routes is index.routes_for("n")
    assert index == Index({"m": index.routes_for("m"), "n": index.routes_for("n")})  # the memo is not data


def test_an_unknown_model_gets_empty_tables_that_are_not_kept() -> None:
    index = Index({"m": (listing(0),)})
    tables = index.tables_for("nope")
    assert tables.routes == () and index.tables_for("nope") is not tables
    assert route(RoutingContext(candidates=index.routes_for("nope"), now=NOW), tables).routes == ()


def test_tables_built_for_other_candidates_are_refused() -> None:
    index = Index({"m": (listing(0), listing(1))})
    with pytest.raises(ValueError, match="other candidates"):
        route(RoutingContext(candidates=(listing(0), listing(1)), now=NOW), index.tables_for("m"))
