"""The router: which listings a request tries, in which order. Pure: plain data in, a decision out.

`route(RoutingContext, tables) -> RoutingDecision`. The caller gathers everything (candidates from
the listing snapshot, breaker and capacity state, latency and load snapshots, the buyer's and the
key's preferences, a per-request seed); nothing here does I/O, reads a clock or draws randomness,
so the same context always gives the same decision and every rule is unit-testable.

Filters, each giving the reason `RoutingDecision.excluded()` reports (first that applies):
`own_listing` (the buyer's own: a listing whose seller is `buyer_id`, whatever the preferences
say, because a request must never earn money for the account that pays it), `ignored`,
`not_in_only`, `over_max_price` (buyer preferences), `breaker_open` (`open_breakers`),
`capacity_exhausted` (`exhausted_until[id] > now`), `fallbacks_disabled` (`allow_fallbacks=false`).

Then `order` (buyer-named listings, in their order) comes first, then one strategy orders the rest
(`sort` preference, else the key's default, else `default_strategy`). `allow_fallbacks=false`
keeps only the first route; with an `order`, that must be the first available listing named in it
(none available: no route, rather than one the buyer did not name). Lower score = tried sooner:

- `cheapest`: price of the expected tokens, in_price * P + out_price * M, exact integers, where
  P = max(1, prompt_tokens_estimate) and M = max(1, max_tokens or DEFAULT_COMPLETION_TOKENS).
- `fastest`: EWMA time to first token (`SpeedStats`). A listing with fewer than MIN_SAMPLES samples
  gets the optimistic prior "as fast as the fastest known one", so it ties with the best and the
  seeded tie-break sends it a fair share of traffic until it has samples of its own.
- `least_busy`: utilisation in [0, 1] (missing = idle).
- `balanced` (default): 0.5 * price + 0.3 * speed + 0.2 * load, each a penalty in [0, 1]:
  price = 1 - c_min / c (c: in * (16 - b) + out * b, b = round(16 * M / (P + M)), the output
  share of the mix in sixteenths; c_min over all candidates; 0 for a free listing), speed =
  1 - t_min / t (t: the `fastest` estimate, at least 1 ms), load = utilisation. Ratios to the best
  rather than min-max, so one very slow or very dear outlier does not flatten everyone else.

Ties (equal score) are ordered by position in `candidates`, rotated by `seed % group size`: each
tied listing goes first for an equal share of seeds, yet one request's order is reproducible.

Speed and state (DESIGN.md: under 100 µs for 1,000 listings; no module globals). This module holds
no state. What can be computed once per candidates tuple, and the full rankings for immutable
signal snapshots (`FrozenMapping` stats or utilisation), live in a `ranking.RouteTables` that the
listing snapshot owns: the hot path calls

    tables = index.tables_for(model)
    decision = route(RoutingContext(candidates=tables.routes, ...), tables)

`Index.tables_for` builds a model's tables on its first request; a snapshot rebuild makes a new
`Index`, so stale tables (and the old routes' provider keys) go with the old one: nothing to clear,
and the memo can never outlive or mismatch the routes it describes. (A `Router` object on
`app.state` would have to key its memo by candidates identity, keep old tuples alive and be told
about rebuilds, which is the problem being avoided.) Without `tables`, `route` builds throwaway
ones: the same decision, but O(n log n) per call, for tests and one-off callers. With a memoised
ranking a decision walks it from the top, skipping excluded listings, until `limit` routes are
found; plain (possibly mutated) dicts are read afresh on every call. `cheapest` needs no snapshot:
only listings beaten on both prices by fewer than BAND_DEPTH others can be among the cheapest
(`loadtests/bench_router.py` prints the figures).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from itertools import repeat

from aichat_gateway.marketplace.preferences import NO_PREFERENCES, Preferences, Strategy, merge
from aichat_gateway.marketplace.ranking import (
    BAND_DEPTH,
    FrozenMapping,
    Ranking,
    RouteTables,
    identity,
    rank_pool,
    walk,
)
from aichat_gateway.marketplace.snapshot import Route

__all__ = [
    "DEFAULT_COMPLETION_TOKENS",
    "MIN_SAMPLES",
    "Exclusion",
    "FrozenMapping",
    "RouteTables",
    "RoutingContext",
    "RoutingDecision",
    "SpeedStats",
    "observe",
    "order_routes",
    "route",
]

PRICE_WEIGHT, SPEED_WEIGHT, LOAD_WEIGHT = 0.5, 0.3, 0.2
MIX_STEPS = 16
DEFAULT_COMPLETION_TOKENS = 512
MIN_SAMPLES = 3
_UNCAPPED = 1 << 127  # above any price: an absent cap compares like a cap nobody exceeds

_NO_STATS: FrozenMapping[str, SpeedStats] = FrozenMapping()
_NO_LOAD: FrozenMapping[str, float] = FrozenMapping()


@dataclass(frozen=True, slots=True)
class SpeedStats:
    """A listing's EWMA time to first token (the whole answer for a non-streamed request)."""

    ttft_ms: float
    samples: int


def observe(previous: SpeedStats | None, ttft_ms: float, alpha: float = 0.2) -> SpeedStats:
    """Fold one observation into the EWMA; with alpha 0.2 the last ten requests carry ~90% of it."""
    if previous is None:
        return SpeedStats(ttft_ms, 1)
    return SpeedStats(previous.ttft_ms + alpha * (ttft_ms - previous.ttft_ms), previous.samples + 1)


class Exclusion(enum.StrEnum):
    OWN_LISTING = "own_listing"
    IGNORED = "ignored"
    NOT_IN_ONLY = "not_in_only"
    OVER_MAX_PRICE = "over_max_price"
    BREAKER_OPEN = "breaker_open"
    CAPACITY_EXHAUSTED = "capacity_exhausted"
    FALLBACKS_DISABLED = "fallbacks_disabled"


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingContext:
    """Everything one decision depends on. Listing ids key the state maps, public ids the
    preferences; both are unique among one model's candidates, as the snapshot builds them."""

    candidates: tuple[Route, ...]
    now: float  # same clock as `exhausted_until`
    seed: int = 0  # per request (e.g. a hash of the request id): spreads ties, reproducibly
    prompt_tokens_estimate: int = 1
    max_tokens: int | None = None
    preferences: Preferences = NO_PREFERENCES  # the request's `provider` object
    key_defaults: Preferences = NO_PREFERENCES  # the API key's; the request wins field by field
    stats: Mapping[str, SpeedStats] = _NO_STATS
    utilisation: Mapping[str, float] = _NO_LOAD
    open_breakers: AbstractSet[str] = frozenset()
    exhausted_until: Mapping[str, float] = _NO_LOAD
    limit: int | None = None  # routes wanted (upstream attempts); None: all, in order
    default_strategy: Strategy = Strategy.BALANCED
    buyer_id: str = ""  # the paying user: their own listings are never routes ("": nobody's)


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    routes: tuple[Route, ...]
    strategy: Strategy
    preferences: Preferences  # the merged preferences that applied
    context: RoutingContext
    tables: RouteTables = field(repr=False, compare=False)

    def excluded(self) -> dict[str, Exclusion]:
        """listing id → why it may not be tried. O(n), so computed on demand: for logs and
        metrics, not the hot path. Listings merely beyond `limit` are not excluded."""
        table = self.tables
        rules = _Rules(table, self.context, self.preferences)
        chosen = {r.listing_id for r in self.routes}
        no_fallbacks = self.preferences.allow_fallbacks is False
        out: dict[str, Exclusion] = {}
        for pos, candidate in enumerate(table.routes):
            reason = rules.reason(pos)
            if reason is None and no_fallbacks and candidate.listing_id not in chosen:
                reason = Exclusion.FALLBACKS_DISABLED
            if reason is not None:
                out[candidate.listing_id] = reason
        return out


def route(ctx: RoutingContext, tables: RouteTables | None = None) -> RoutingDecision:
    """The order to try listings in; see the module docstring for every rule. `tables` must be
    built over `ctx.candidates` itself (`Index.tables_for(model)` with `Index.routes_for(model)`)."""
    if tables is None:
        tables = RouteTables(ctx.candidates)
    elif tables.routes is not ctx.candidates and (tables.n or ctx.candidates):
        raise ValueError("route tables were built for other candidates")
    table = tables
    prefs = merge(ctx.key_defaults, ctx.preferences)
    strategy = prefs.sort or ctx.default_strategy
    rules = _Rules(table, ctx, prefs)
    eligible = rules.eligible
    prefix: list[int] = []
    for public_id in prefs.order or ():
        pos = table.by_public.get(public_id)
        if pos is not None and eligible(pos) and pos not in prefix:  # `order` is short (≤ 256)
            prefix.append(pos)
    limit = table.n if ctx.limit is None else max(ctx.limit, 0)
    if prefs.allow_fallbacks is False:
        limit = min(limit, 1)
    need = limit - len(prefix)
    if need > 0 and not (prefs.allow_fallbacks is False and prefs.order):
        prefix.extend(_strategy_picks(table, ctx, rules, strategy, prefix, need))
    routes = table.routes
    return RoutingDecision(tuple(map(routes.__getitem__, prefix[:limit])), strategy, prefs, ctx, table)


def order_routes(routes: Sequence[Route], tie_breaker: int, tables: RouteTables | None = None) -> list[Route]:
    """Every route, cheapest first (one input plus one output token): the quote's order
    (`proxy/quote.py`). Pass `tables` (built over `routes` itself) to reuse the snapshot's
    per-candidates table."""
    if len(routes) <= 1:
        return list(routes)  # the common case of one listing per model: nothing to decide
    candidates = routes if isinstance(routes, tuple) else tuple(routes)
    ctx = RoutingContext(
        candidates=candidates, now=0.0, seed=tie_breaker, max_tokens=1, default_strategy=Strategy.CHEAPEST
    )
    return list(route(ctx, tables).routes)


class _Rules:
    """The filters of one decision, over table positions: a cheap `eligible` and an exact `reason`."""

    __slots__ = ("allowed", "blocked", "max_in", "max_out", "table")

    def __init__(self, table: RouteTables, ctx: RoutingContext, prefs: Preferences) -> None:
        self.table = table
        by_listing, by_public = table.by_listing, table.by_public
        # Lowest precedence first, so a later (stronger) reason overwrites.
        # State maps may cover every listing of every model: walk whichever side is shorter.
        blocked: dict[int, Exclusion] = {}
        now, exhausted, breakers = ctx.now, ctx.exhausted_until, ctx.open_breakers
        if len(exhausted) <= table.n:
            for listing_id, until in exhausted.items():
                if until > now and (pos := by_listing.get(listing_id)) is not None:
                    blocked[pos] = Exclusion.CAPACITY_EXHAUSTED
        else:
            for pos, listing_id in enumerate(table.ids):
                if exhausted.get(listing_id, now) > now:
                    blocked[pos] = Exclusion.CAPACITY_EXHAUSTED
        if len(breakers) <= table.n:
            for listing_id in breakers:
                if (pos := by_listing.get(listing_id)) is not None:
                    blocked[pos] = Exclusion.BREAKER_OPEN
        else:
            for pos, listing_id in enumerate(table.ids):
                if listing_id in breakers:
                    blocked[pos] = Exclusion.BREAKER_OPEN
        for public_id in prefs.ignore or ():
            if (pos := by_public.get(public_id)) is not None:
                blocked[pos] = Exclusion.IGNORED
        # Last: no preference can bring an own listing back. One look-up; most buyers sell nothing.
        if ctx.buyer_id and (own := table.by_seller.get(ctx.buyer_id)) is not None:
            for pos in own:
                blocked[pos] = Exclusion.OWN_LISTING
        self.blocked = blocked
        self.allowed: set[int] | None = None
        if prefs.only is not None:
            self.allowed = {by_public[p] for p in prefs.only if p in by_public}
        caps = prefs.max_price
        self.max_in = caps.prompt if caps is not None else None
        self.max_out = caps.completion if caps is not None else None

    def price_ok(self, pos: int) -> bool:
        return (self.max_in is None or self.table.inp[pos] <= self.max_in) and (
            self.max_out is None or self.table.out[pos] <= self.max_out
        )

    def priced(self) -> bool:
        return self.max_in is not None or self.max_out is not None

    def eligible(self, pos: int) -> bool:
        return (
            pos not in self.blocked
            and (self.allowed is None or pos in self.allowed)
            and (self.max_in is None or self.table.inp[pos] <= self.max_in)
            and (self.max_out is None or self.table.out[pos] <= self.max_out)
        )

    def pool(self, positions: Iterable[int], skip: set[int]) -> list[int]:
        """The eligible `positions` not in `skip` (which holds `blocked`); one pass, no calls."""
        allowed, inp, out = self.allowed, self.table.inp, self.table.out
        max_in = self.max_in if self.max_in is not None else _UNCAPPED
        max_out = self.max_out if self.max_out is not None else _UNCAPPED
        if allowed is None and max_in is _UNCAPPED and max_out is _UNCAPPED:
            return [p for p in positions if p not in skip]
        return [
            p
            for p in positions
            if p not in skip and (allowed is None or p in allowed) and inp[p] <= max_in and out[p] <= max_out
        ]

    def reason(self, pos: int) -> Exclusion | None:
        blocked = self.blocked.get(pos)
        if blocked is Exclusion.OWN_LISTING or blocked is Exclusion.IGNORED:
            return blocked
        if self.allowed is not None and pos not in self.allowed:
            return Exclusion.NOT_IN_ONLY
        if not self.price_ok(pos):
            return Exclusion.OVER_MAX_PRICE
        return blocked


def _strategy_picks(
    table: RouteTables, ctx: RoutingContext, rules: _Rules, strategy: Strategy, placed: list[int], need: int
) -> list[int]:
    """The best `need` eligible positions not already `placed`, by the strategy's score."""
    skip = set(rules.blocked)
    skip.update(placed)
    prompt = max(1, ctx.prompt_tokens_estimate)
    completion = max(1, ctx.max_tokens if ctx.max_tokens is not None else DEFAULT_COMPLETION_TOKENS)
    if strategy is Strategy.CHEAPEST:
        source: Iterable[int]
        if rules.allowed is not None:
            source = sorted(rules.allowed)
        elif need <= BAND_DEPTH and need <= BAND_DEPTH - table.in_band(skip):  # full orders skip the band
            # A listing outside the band is beaten on both prices by ≥ BAND_DEPTH listings *in* the
            # band; a price cap never excludes a cheaper one, so ≥ need of them remain eligible.
            source = table.band()
        else:
            source = range(table.n)
        pool = rules.pool(source, skip)
        inp, out = table.inp, table.out
        return rank_pool(pool, [inp[p] * prompt + out[p] * completion for p in pool], ctx.seed, need)
    bucket = (2 * MIX_STEPS * completion + prompt + completion) // (2 * (prompt + completion))
    ranking = _ranking(table, strategy, ctx.stats, ctx.utilisation, bucket)
    if ranking is None or rules.allowed is not None:
        scores = ranking.scores if ranking is not None else _scores(table, strategy, ctx, bucket)
        candidates = sorted(rules.allowed) if rules.allowed is not None else range(table.n)
        pool = rules.pool(candidates, skip)
        return rank_pool(pool, [scores[p] for p in pool], ctx.seed, need)
    return walk(ranking, skip, rules.price_ok if rules.priced() else None, ctx.seed, need)


@dataclass(frozen=True, slots=True)
class _Signals:
    stats: Mapping[str, SpeedStats]
    utilisation: Mapping[str, float]


def _ranking(
    table: RouteTables, strategy: Strategy, stats: Mapping[str, SpeedStats], load: Mapping[str, float], bucket: int
) -> Ranking | None:
    """The full ranking, memoised on `table`, when its inputs are immutable; else None."""
    speed_id, load_id = identity(stats), identity(load)
    if strategy is Strategy.FASTEST:
        key: tuple[object, ...] = (strategy, speed_id)
    elif strategy is Strategy.LEAST_BUSY:
        key = (strategy, load_id)
    else:
        key = (strategy, speed_id, load_id, bucket)
    if None in key:
        return None
    ranking = table.rankings.get(key)
    if ranking is None:
        ranking = table.remember(key, _scores(table, strategy, _Signals(stats, load), bucket), (stats, load))
    return ranking


def _scores(table: RouteTables, strategy: Strategy, signals: RoutingContext | _Signals, bucket: int) -> list[float]:
    """Every candidate's score (lower is better) for a dynamic strategy; formulas: module docstring."""
    if strategy is Strategy.FASTEST:
        return _latencies(table, signals.stats)
    if strategy is Strategy.LEAST_BUSY:
        return _loads(table, signals.utilisation)
    costs = [i * (MIX_STEPS - bucket) + o * bucket for i, o in zip(table.inp, table.out, strict=True)]
    cheapest = min(costs, default=0)
    latencies = _latencies(table, signals.stats)
    fastest = min(latencies, default=1.0)
    return [
        PRICE_WEIGHT * (1.0 - cheapest / cost if cost else 0.0) + SPEED_WEIGHT * (1.0 - fastest / ms) + LOAD_WEIGHT * u
        for cost, ms, u in zip(costs, latencies, _loads(table, signals.utilisation), strict=True)
    ]


def _latencies(table: RouteTables, stats: Mapping[str, SpeedStats]) -> list[float]:
    """EWMA time to first token in ms (clamped to [1 ms, 1e9 ms]); unknown → the fastest known."""
    raw: list[float | None] = [
        (1.0 if s.ttft_ms < 1.0 else 1e9 if s.ttft_ms > 1e9 else s.ttft_ms)
        if s is not None and s.samples >= MIN_SAMPLES and s.ttft_ms == s.ttft_ms
        else None
        for s in map(stats.get, table.ids)  # s.ttft_ms == s.ttft_ms: not NaN
    ]
    known = [ms for ms in raw if ms is not None]
    prior = min(known, default=1.0)
    return [prior if ms is None else ms for ms in raw]


def _loads(table: RouteTables, utilisation: Mapping[str, float]) -> list[float]:
    """Utilisation clamped to [0, 1]; missing or NaN → 0 (idle)."""
    return [(u if u <= 1.0 else 1.0) if u >= 0.0 else 0.0 for u in map(utilisation.get, table.ids, repeat(0.0))]
