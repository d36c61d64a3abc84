"""Micro-benchmark of the router: microseconds per routing decision (DESIGN.md: < 100 µs at 1,000 listings).

Why: the router runs on every request, before any I/O, so its cost is pure added latency and CPU.
For 10, 100 and 1,000 candidate listings of one model and each strategy it times `route()` with
timeit (best of 5 repeats, each a loop over 200 prepared contexts: varied seeds, prompt sizes and
max_tokens), in these situations:

- `warm`: stats and utilisation are `FrozenMapping` snapshots, as the gateway holds them (rebuilt
  periodically, swapped whole), 1% of listings with an open breaker and 1% out of capacity,
  `limit=3` (the default GATEWAY_UPSTREAM_ATTEMPTS);
- `prefs`: as `warm`, plus buyer preferences (`order` of 2, `ignore` of 5, a `max_price`);
- `idle`: as `warm` with every utilisation 0 and no stats yet (everything ties);
- `live`: stats and utilisation as plain dicts (read afresh on every call, never memoised);
- `full`: as `warm` but `limit=None` (the whole order, as `order_routes` returns it).

Each decision is timed as the hot path makes it: `route(ctx, index.tables_for(model))` on a
snapshot `Index`, whose tables the first requests warm (as a steady-state process has them).
It also prints the one-off costs paid after each snapshot refresh: the per-candidates table and
a strategy's ranking. Standard library only; run `.venv/bin/python loadtests/bench_router.py`.
"""

from __future__ import annotations

import random
import sys
import timeit
from collections.abc import Callable
from dataclasses import replace

from aichat_gateway.marketplace import router
from aichat_gateway.marketplace.preferences import Strategy, parse_preferences
from aichat_gateway.marketplace.pricing import Price
from aichat_gateway.marketplace.router import (
    FrozenMapping,
    RouteTables,
    RoutingContext,
    SpeedStats,
    route,
)
from aichat_gateway.marketplace.snapshot import Index, ProviderKey, Route

SIZES = (10, 100, 1000)
STRATEGIES = tuple(Strategy)
CONTEXTS = 200
NOW = 1_000_000.0


def candidates(n: int, rng: random.Random) -> tuple[Route, ...]:
    """Half priced by a multiplier over one list price (proportional sides), half explicitly."""
    routes = []
    for i in range(n):
        if i % 2:
            factor = rng.choice([0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.25])
            price = Price(round(150_000 * factor), round(600_000 * factor))
        else:
            price = Price(rng.randrange(50_000, 400_000, 1_000), rng.randrange(200_000, 1_600_000, 1_000))
        routes.append(
            Route(f"listing-{i:05d}", f"lst_{i:016x}", "openai", "https://x", ProviderKey("k"), "m", "m", price)
        )
    return tuple(routes)


def contexts(n: int, situation: str, strategy: Strategy) -> tuple[Index, list[RoutingContext]]:
    """A fresh snapshot index serving `n` listings of model "m", and requests for it."""
    rng = random.Random(n)
    index = Index({"m": candidates(n, rng)})
    cands = index.routes_for("m")
    ids = [r.listing_id for r in cands]
    stats = {i: SpeedStats(rng.uniform(150, 3000), rng.randrange(3, 500)) for i in ids if rng.random() < 0.9}
    load = {i: rng.random() for i in ids}
    if situation == "idle":
        stats, load = {}, dict.fromkeys(ids, 0.0)
    breakers = frozenset(rng.sample(ids, max(1, n // 100)))
    exhausted = {i: NOW + 30 for i in rng.sample(ids, max(1, n // 100))}
    prefs = parse_preferences(None)
    if situation == "prefs":
        publics = [r.public_id for r in cands]
        prefs = parse_preferences(
            {
                "order": rng.sample(publics, 2),
                "ignore": rng.sample(publics, min(5, n)),
                "max_price": {"prompt": "0.3", "completion": "1.2"},
            }
        )
    frozen = situation != "live"
    base = RoutingContext(
        candidates=cands,
        now=NOW,
        stats=FrozenMapping(stats) if frozen else stats,
        utilisation=FrozenMapping(load) if frozen else load,
        open_breakers=breakers,
        exhausted_until=FrozenMapping(exhausted),
        preferences=prefs,
        limit=None if situation == "full" else 3,
        default_strategy=strategy,
    )
    return index, [
        replace(
            base,
            seed=rng.getrandbits(32),
            prompt_tokens_estimate=rng.randrange(20, 8000),
            max_tokens=rng.choice([None, 256, 1024, 4096]),
        )
        for _ in range(CONTEXTS)
    ]


def per_call_us(run: Callable[[], object], calls: int, repeat: int = 5) -> float:
    best = min(timeit.repeat(run, number=1, repeat=repeat))
    return best / calls * 1e6


def decision_us(index: Index, ctxs: list[RoutingContext]) -> float:
    for ctx in ctxs:  # warm the snapshot's table and rankings, as a steady-state process has
        route(ctx, index.tables_for("m"))

    def run() -> None:
        for ctx in ctxs:
            route(ctx, index.tables_for("m"))

    return per_call_us(run, len(ctxs))


def one_off_us(n: int) -> tuple[float, float]:
    """Building the candidates table (+ cheapest band) and one balanced ranking, from cold."""
    _, (ctx, *_) = contexts(n, "warm", Strategy.BALANCED)
    tables = RouteTables(ctx.candidates)

    def table() -> None:
        RouteTables(ctx.candidates).band()

    def ranking() -> None:
        tables.rankings.clear()
        router._ranking(tables, Strategy.BALANCED, ctx.stats, ctx.utilisation, 8)

    return per_call_us(table, 1), per_call_us(ranking, 1)


def main() -> None:
    print(f"python {sys.version.split()[0]}; µs per decision (best of 5, {CONTEXTS} varied requests each)\n")
    situations = ("warm", "prefs", "idle", "live", "full")
    for situation in situations:
        print(f"[{situation}]")
        print(f"  {'strategy':<11}" + "".join(f"{n:>10}" for n in SIZES))
        for strategy in STRATEGIES:
            cells = [decision_us(*contexts(n, situation, strategy)) for n in SIZES]
            print(f"  {strategy.value:<11}" + "".join(f"{c:>10.1f}" for c in cells))
        print()
    print("[one-off, per snapshot refresh]")
    for n in SIZES:
        table, ranking = one_off_us(n)
        print(f"  n={n:<5} table + cheapest band {table:8.0f} µs   balanced ranking {ranking:8.0f} µs")


if __name__ == "__main__":
    main()
