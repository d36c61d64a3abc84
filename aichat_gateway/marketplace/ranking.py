"""The router's memo: per-candidates tables and memoised rankings, owned by the listing snapshot.

Why it exists: DESIGN.md wants a routing decision under 100 µs at 1,000 listings, and sorting
1,000 keys alone uses most of that budget in CPython here (docs/performance.md), so a decision
must not touch every candidate. What
depends only on one model's candidates (prices by position, id → position maps, the `cheapest`
price band) and the full rankings built from immutable signal snapshots (`FrozenMapping`) are
computed once and walked from the top on every request.

Who owns it: a `RouteTables` is built per candidates tuple and held by the snapshot's `Index`
(`Index.tables_for(model)`, built lazily on a model's first request). The index is immutable and
swapped whole on every rebuild, so the memo lives exactly as long as the routes it describes: no
module state, no `clear_memo()`, and an old snapshot's routes (provider keys included) are freed
with it. A `RouteTables(candidates)` made on the spot is also correct, just not reused.

Nothing here knows the strategies: `router` computes the scores and the memo key; this module
stores rankings and walks them (`walk`), or orders a pool directly (`rank_pool`), with the one
tie rule: equal scores in candidate order, rotated by `seed % group size`.
"""

from __future__ import annotations

import heapq
from bisect import insort
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # snapshot imports this module at run time (Index.tables_for)
    from aichat_gateway.marketplace.snapshot import Route

BAND_DEPTH = 16  # `cheapest` fast path: valid while limit + excluded listings in the band ≤ this
MAX_RANKINGS = 40  # per table: every balanced mix bucket (17) of two signal generations, and more
_SMALL_GROUP = 32  # tie groups up to this size are simply filtered; bigger ones are counted around

K = TypeVar("K")
V = TypeVar("V")


class FrozenMapping(Mapping[K, V]):
    """An immutable copy of a mapping. Rankings built from one are memoised (by its identity);
    plain dicts may change in place, so they are read afresh on every decision."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[K, V] | None = None) -> None:
        self._data: dict[K, V] = dict(data or {})

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"

    def __hash__(self) -> int:  # immutable, so hashable (and usable as a dataclass default)
        return hash(frozenset(self._data.items()))


def identity(mapping: Mapping[str, object]) -> int | None:
    """A memo key for signals: 0 for empty, the id of a `FrozenMapping`, None (not memoisable)."""
    if not mapping:
        return 0
    return id(mapping) if isinstance(mapping, FrozenMapping) else None


@dataclass(slots=True)
class Ranking:
    scores: list[float]  # by position
    order: list[int]  # positions by (score, position)
    rank: list[int]  # position → index in `order`
    ends: list[int]  # index in `order` → end of its tie group
    keep: tuple[object, ...]  # the source mappings: alive while memoised, so their ids stay unique


class RouteTables:
    """What depends only on one candidates tuple, plus the rankings memoised over it."""

    __slots__ = (
        "_band",
        "_band_set",
        "by_listing",
        "by_public",
        "by_seller",
        "ids",
        "inp",
        "n",
        "out",
        "rankings",
        "routes",
    )

    def __init__(self, routes: tuple[Route, ...]) -> None:
        self.routes = routes
        self.n = len(routes)
        self.by_listing: dict[str, int] = {}
        self.by_public: dict[str, int] = {}
        # seller id → positions of that seller's listings: the router skips the buyer's own with
        # one look-up per request instead of a comparison per candidate.
        self.by_seller: dict[str, list[int]] = {}
        for pos, r in enumerate(routes):
            self.by_listing.setdefault(r.listing_id, pos)
            self.by_public.setdefault(r.public_id, pos)
            if r.seller_id:
                self.by_seller.setdefault(r.seller_id, []).append(pos)
        self.ids = [r.listing_id for r in routes]
        self.inp = [r.price.input_micro_per_million for r in routes]
        self.out = [r.price.output_micro_per_million for r in routes]
        self._band: list[int] | None = None
        self._band_set: frozenset[int] = frozenset()
        self.rankings: dict[tuple[object, ...], Ranking] = {}

    def band(self) -> list[int]:
        """Positions beaten on both prices (≤ on each, < on one) by fewer than BAND_DEPTH others:
        for any positive token mix, only these can be among the BAND_DEPTH cheapest. A listing
        outside is beaten by ≥ BAND_DEPTH listings inside: take its beater with the fewest beaters
        of its own; all of those beat the listing too and none is outside, or it had fewer."""
        if self._band is None:
            inp, out = self.inp, self.out
            by_price = sorted(range(self.n), key=lambda p: (inp[p], out[p]))
            lowest: list[int] = []  # the smallest output prices among listings seen so far
            band: list[int] = []
            i = 0
            while i < self.n:
                j, here = i, (inp[by_price[i]], out[by_price[i]])
                while j < self.n and (inp[by_price[j]], out[by_price[j]]) == here:
                    j += 1
                if len(lowest) < BAND_DEPTH or lowest[BAND_DEPTH - 1] > here[1]:
                    band.extend(by_price[i:j])
                for _ in range(min(j - i, BAND_DEPTH)):
                    insort(lowest, here[1])
                del lowest[BAND_DEPTH:]
                i = j
            self._band = sorted(band)
            self._band_set = frozenset(band)
        return self._band

    def in_band(self, positions: set[int]) -> int:
        self.band()
        return sum(1 for pos in positions if pos in self._band_set)

    def remember(self, key: tuple[object, ...], scores: list[float], keep: tuple[object, ...]) -> Ranking:
        """Sort `scores` (by position) once and memoise the ranking under `key`. `keep` holds the
        immutable inputs whose ids are in `key`, so no other object can take those ids meanwhile."""
        n = self.n
        order = sorted(range(n), key=scores.__getitem__)  # stable: ties stay by position
        rank = [0] * n
        for index, pos in enumerate(order):
            rank[pos] = index
        ends = [0] * n
        end = n
        for index in range(n - 1, -1, -1):
            if index + 1 < n and scores[order[index]] != scores[order[index + 1]]:
                end = index + 1
            ends[index] = end
        if len(self.rankings) >= MAX_RANKINGS:
            del self.rankings[next(iter(self.rankings))]  # oldest first
        ranking = self.rankings[key] = Ranking(scores, order, rank, ends, keep)
        return ranking


def rank_pool(pool: list[int], scores: list[float] | list[int], seed: int, need: int) -> list[int]:
    """The reference order of `pool` (positions): by score, ties by position rotated by `seed`."""
    if need <= 0:
        return []
    if len(pool) > 64 and need < len(pool) // 4:  # sort only up to the need-th score's tie group
        cutoff = heapq.nsmallest(need, scores)[-1]
        pairs = sorted([(score, pos) for score, pos in zip(scores, pool, strict=True) if score <= cutoff])
    else:
        pairs = sorted(zip(scores, pool, strict=True))
    picked: list[int] = []
    i, size = 0, len(pairs)
    while i < size and len(picked) < need:
        score, pos = pairs[i]
        j = i + 1
        if j == size or pairs[j][0] != score:
            picked.append(pos)
            i = j
            continue
        while j < size and pairs[j][0] == score:
            j += 1
        group = [pos for _, pos in pairs[i:j]]
        turn = seed % len(group)
        picked.extend(group[turn:] + group[:turn])
        i = j
    return picked[:need]


def walk(ranking: Ranking, skip: set[int], price_ok: Callable[[int], bool] | None, seed: int, need: int) -> list[int]:
    """`rank_pool` over a memoised ranking: only the top of it is read."""
    order, ends = ranking.order, ranking.ends
    picked: list[int] = []
    k, size = 0, len(order)
    while k < size and len(picked) < need:
        end = ends[k]
        if end - k == 1:
            pos = order[k]
            if pos not in skip and (price_ok is None or price_ok(pos)):
                picked.append(pos)
        elif price_ok is not None or end - k <= _SMALL_GROUP:
            group = [p for p in order[k:end] if p not in skip and (price_ok is None or price_ok(p))]
            if group:
                turn = seed % len(group)
                picked.extend(group[turn:] + group[:turn])
        else:
            picked.extend(_rotate_large(ranking, k, end, skip, seed, need - len(picked)))
        k = end
    return picked[:need]


def _rotate_large(ranking: Ranking, start: int, end: int, skip: set[int], seed: int, take: int) -> list[int]:
    """A big tie group (an idle market: every load 0) without scanning it: only the few skipped
    members are located (by rank), and the rotation's start is found by counting around them."""
    rank = ranking.rank
    holes = sorted(rank[p] - start for p in skip if start <= rank[p] < end)
    length = end - start
    size = length - len(holes)
    if size == 0:
        return []
    index = seed % size  # the first pick is the index-th unskipped member
    for hole in holes:
        if hole > index:
            break
        index += 1
    hole_set = set(holes)
    order = ranking.order
    picked: list[int] = []
    while len(picked) < min(take, size):
        if index not in hole_set:
            picked.append(order[start + index])
        index = index + 1 if index + 1 < length else 0
    return picked
