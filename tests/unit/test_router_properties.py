"""Properties of `route()` over random markets (hypothesis): filters always hold, and the fast paths
(memoised rankings walked from the top, the `cheapest` price band, big tie groups) always agree
with the plain full sort they stand in for. Tests that route one market several times share one
`RouteTables` between the calls, as requests share the snapshot's; the others use fresh ones."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from aichat_gateway.marketplace.preferences import MaxPrice, Preferences, Strategy, merge
from aichat_gateway.marketplace.pricing import Price
from aichat_gateway.marketplace.router import FrozenMapping, RouteTables, RoutingContext, SpeedStats, route
from aichat_gateway.marketplace.snapshot import ProviderKey, Route

NOW = 1_000.0
# Few distinct values, so ties, identical listings and dominance chains are common.
PRICES = st.sampled_from([0, 1, 2, 3, 5, 8, 100, 10**9])
LOADS = st.sampled_from([0.0, 0.25, 0.5, 1.0, -1.0, 2.0, math.nan])
TIMES = st.sampled_from([0.5, 100.0, 250.0, 1e12, math.nan])


SELLERS = ("s0", "s1", "s2")


def listing(i: int, inp: int, out: int) -> Route:
    seller = SELLERS[i % len(SELLERS)]
    return Route(f"id{i}", f"lst_{i}", "openai", "https://x", ProviderKey("k"), "m", "m", Price(inp, out), None, seller)


def candidates(prices: list[tuple[int, int]]) -> tuple[Route, ...]:
    return tuple(listing(i, a, b) for i, (a, b) in enumerate(prices))


def frozen_signals(ctx: RoutingContext) -> RoutingContext:
    return replace(ctx, stats=FrozenMapping(ctx.stats), utilisation=FrozenMapping(ctx.utilisation))


def markets(prices: st.SearchStrategy[list[tuple[int, int]]], ids: int) -> st.SearchStrategy[RoutingContext]:
    """Random contexts. Strategies are built once here (per-draw construction dominates run time);
    listing numbers are drawn from 0..ids-1, and a number with no candidate is a listing elsewhere."""
    numbers = st.integers(0, ids - 1)
    state_ids, publics = numbers.map(lambda i: f"id{i}"), numbers.map(lambda i: f"lst_{i}")
    preferences = st.builds(
        Preferences,
        order=st.none() | st.lists(publics, unique=True, max_size=5).map(tuple),
        only=st.none() | st.frozensets(publics, min_size=1, max_size=12),
        ignore=st.none() | st.frozensets(publics, max_size=8),
        sort=st.none() | st.sampled_from(Strategy),
        max_price=st.none() | st.builds(MaxPrice, st.none() | PRICES, st.none() | PRICES),
        allow_fallbacks=st.none() | st.booleans(),
    )
    return st.builds(
        RoutingContext,
        candidates=prices.map(candidates),
        now=st.just(NOW),
        seed=st.integers(-(2**40), 2**40),
        prompt_tokens_estimate=st.integers(0, 10**6),
        max_tokens=st.none() | st.integers(1, 10**6),
        preferences=preferences,
        key_defaults=preferences,
        stats=st.dictionaries(state_ids, st.builds(SpeedStats, TIMES, st.integers(0, 5))),
        utilisation=st.dictionaries(state_ids, LOADS),
        open_breakers=st.frozensets(state_ids, max_size=10),
        exhausted_until=st.dictionaries(state_ids, st.sampled_from([NOW - 1, NOW, NOW + 1])),
        limit=st.none() | st.integers(0, 12),
        default_strategy=st.sampled_from(Strategy),
        buyer_id=st.sampled_from(["", *SELLERS, "s9"]),
    )


PLAIN = markets(st.lists(st.tuples(PRICES, PRICES), max_size=60), ids=64)
MARKETS = PLAIN | PLAIN.map(frozen_signals)
BIG_MARKETS = markets(st.lists(st.tuples(PRICES, PRICES), min_size=33, max_size=150), ids=160).map(frozen_signals)


def ids(ctx: RoutingContext) -> list[str]:
    return [r.listing_id for r in route(ctx).routes]


def public_ids(ctx: RoutingContext) -> set[str]:
    return {r.public_id for r in route(ctx).routes}


def prefs_of(ctx: RoutingContext) -> Preferences:
    return merge(ctx.key_defaults, ctx.preferences)


@settings(deadline=None)
@given(MARKETS)
def test_every_route_is_a_candidate_and_appears_once(ctx: RoutingContext) -> None:
    routes = route(ctx).routes
    assert len(set(routes)) == len(routes)
    assert set(routes) <= set(ctx.candidates)


@settings(deadline=None)
@given(MARKETS)
def test_without_a_limit_the_routes_are_a_permutation_of_the_candidates_not_excluded(ctx: RoutingContext) -> None:
    decision = route(replace(ctx, limit=None))
    everyone = {r.listing_id for r in ctx.candidates}
    assert sorted(r.listing_id for r in decision.routes) == sorted(everyone - set(decision.excluded()))


@settings(deadline=None)
@given(MARKETS)
def test_a_route_is_never_also_reported_excluded(ctx: RoutingContext) -> None:
    decision = route(ctx)
    assert not set(ids(ctx)) & set(decision.excluded())


@settings(deadline=None)
@given(MARKETS)
def test_with_an_allow_list_every_route_is_on_it(ctx: RoutingContext) -> None:
    only = prefs_of(ctx).only
    if only is not None:
        assert public_ids(ctx) <= only


@settings(deadline=None)
@given(MARKETS)
def test_ignored_listings_never_appear(ctx: RoutingContext) -> None:
    assert not public_ids(ctx) & (prefs_of(ctx).ignore or frozenset())


@settings(deadline=None)
@given(MARKETS)
def test_listings_with_an_open_breaker_or_no_capacity_never_appear(ctx: RoutingContext) -> None:
    cooling = {i for i, until in ctx.exhausted_until.items() if until > ctx.now}
    assert not set(ids(ctx)) & (set(ctx.open_breakers) | cooling)


@settings(deadline=None)
@given(MARKETS)
def test_no_route_costs_more_than_the_buyers_caps(ctx: RoutingContext) -> None:
    caps = prefs_of(ctx).max_price or MaxPrice()
    for r in route(ctx).routes:
        assert caps.prompt is None or r.price.input_micro_per_million <= caps.prompt
        assert caps.completion is None or r.price.output_micro_per_million <= caps.completion


@settings(deadline=None)
@given(MARKETS)
def test_no_route_is_ever_a_listing_of_the_buyer(ctx: RoutingContext) -> None:
    assert all(r.seller_id != ctx.buyer_id for r in route(ctx).routes)


@settings(deadline=None)
@given(MARKETS)
def test_without_fallbacks_at_most_one_route_is_returned(ctx: RoutingContext) -> None:
    if prefs_of(ctx).allow_fallbacks is False:
        assert len(route(ctx).routes) <= 1


@settings(deadline=None)
@given(MARKETS)
def test_available_order_listings_come_first_in_the_buyers_order(ctx: RoutingContext) -> None:
    named = prefs_of(ctx).order or ()
    routes = [r.public_id for r in route(replace(ctx, limit=None)).routes]
    leading = [p for p in routes if p in named]
    assert routes[: len(leading)] == leading
    assert leading == [p for p in named if p in leading]


@settings(deadline=None)
@given(MARKETS)
def test_the_same_context_always_gives_the_same_routes(ctx: RoutingContext) -> None:
    tables = RouteTables(ctx.candidates)
    assert route(ctx).routes == route(ctx).routes == route(ctx, tables).routes == route(ctx, tables).routes


@settings(deadline=None, max_examples=300)
@given(MARKETS, st.integers(0, 12))
def test_a_limit_gives_the_first_routes_of_the_full_order(ctx: RoutingContext, limit: int) -> None:
    tables = RouteTables(ctx.candidates)
    assert route(replace(ctx, limit=limit), tables).routes == route(replace(ctx, limit=None), tables).routes[:limit]


@settings(deadline=None, max_examples=300)
@given(PLAIN.map(frozen_signals))
def test_memoised_snapshots_and_plain_dicts_give_the_same_routes(ctx: RoutingContext) -> None:
    tables = RouteTables(ctx.candidates)
    plain = replace(ctx, stats=dict(ctx.stats), utilisation=dict(ctx.utilisation))
    assert route(ctx, tables).routes == route(plain, tables).routes


@settings(deadline=None, max_examples=200)
@given(MARKETS, st.lists(st.tuples(st.sampled_from(Strategy), st.integers(0, 2**20), st.none() | st.integers(0, 12))))
def test_tables_warmed_by_other_requests_route_like_fresh_ones(
    ctx: RoutingContext, others: list[tuple[Strategy, int, int | None]]
) -> None:
    tables = RouteTables(ctx.candidates)
    for strategy, number, limit in others:  # other requests on the same snapshot fill the memo first
        other = replace(ctx, default_strategy=strategy, seed=number, max_tokens=number or None, limit=limit)
        route(other, tables)
    assert route(ctx, tables).routes == route(ctx).routes
    assert route(ctx, tables).excluded() == route(ctx).excluded()


@settings(deadline=None, max_examples=100)
@given(BIG_MARKETS, st.integers(1, 10))
def test_big_tie_groups_are_walked_like_the_full_sort(ctx: RoutingContext, limit: int) -> None:
    idle = replace(ctx, utilisation=FrozenMapping(), default_strategy=Strategy.LEAST_BUSY, limit=limit)
    idle = replace(idle, preferences=replace(idle.preferences, sort=None, max_price=None, only=None))
    idle = replace(idle, key_defaults=replace(idle.key_defaults, sort=None, max_price=None, only=None))
    tables = RouteTables(idle.candidates)
    assert route(idle, tables).routes == route(replace(idle, utilisation={"id_elsewhere": 0.0}), tables).routes
    assert route(idle, tables).routes == route(replace(idle, limit=None), tables).routes[:limit]
