"""Routing order: a pure function from candidate routes to the order they are tried in.

This first version orders cheapest first (input plus output price) and spreads load across
equally priced listings with a per-request tie-breaker. Capacity, breakers and buyer
preferences arrive with the marketplace issue; they slot in here as filters and sort keys.
"""

from __future__ import annotations

from collections.abc import Sequence

from aichat_gateway.marketplace.snapshot import Route


def order_routes(routes: Sequence[Route], tie_breaker: int) -> list[Route]:
    """Cheapest first; among equal prices, a rotation chosen by `tie_breaker` (e.g. a request hash)."""
    count = len(routes)
    if count <= 1:
        return list(routes)
    indexed = list(enumerate(routes))
    indexed.sort(
        key=lambda pair: (
            pair[1].price.input_micro_per_million + pair[1].price.output_micro_per_million,
            (pair[0] + tie_breaker) % count,
        )
    )
    return [route for _, route in indexed]
