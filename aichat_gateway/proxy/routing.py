"""The hot path's routing shell: gathers the state one routing decision needs and asks the pure
router (`marketplace.router.route`) for the order to try listings in.

Inputs come from this process only, so a decision costs no I/O: the listing snapshot's per-model
route tables, breakers that are open (`BreakerView`), listings resting until a time
(`exhausted_until`: at a capacity cap or told to wait by a provider's 429), the buyer's `provider`
preferences from the request body and the key's defaults, and this process's EWMA of each
listing's time to first token (`SpeedBoard`). The buyer's user id goes in too: the router never
routes a request to a listing of the account that pays for it.

`SpeedBoard` hands the router a `FrozenMapping` snapshot, rebuilt at most once per
`SNAPSHOT_EVERY` seconds, because the router memoises its rankings per immutable snapshot: a plain
dict would make every `fastest`/`balanced` decision sort all candidates again.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aichat_gateway.config.logging import get_logger
from aichat_gateway.marketplace.breaker import Verdict
from aichat_gateway.marketplace.errors import InvalidPreferences
from aichat_gateway.marketplace.preferences import NO_PREFERENCES, Preferences, parse_preferences
from aichat_gateway.marketplace.router import (
    Exclusion,
    FrozenMapping,
    RoutingContext,
    RoutingDecision,
    SpeedStats,
    observe,
    route,
)
from aichat_gateway.marketplace.snapshot import Route
from aichat_gateway.proxy.errors import GatewayError, InvalidRequest, ModelNotFound, RateLimited, Unavailable

if TYPE_CHECKING:  # services.py imports this module
    from aichat_gateway.proxy.services import ProxyServices

log = get_logger(__name__)
SNAPSHOT_EVERY = 1.0
# Bytes over-count tokens (a cl100k token is ~4 bytes of English), which is all ordering needs:
# counting real tokens here would put tiktoken on every request.
_BYTES_PER_TOKEN = 4


class SpeedBoard:
    """Per-process EWMA time to first token per listing, published as immutable snapshots."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._live: dict[str, SpeedStats] = {}
        self._snapshot: FrozenMapping[str, SpeedStats] = FrozenMapping()
        self._taken_at = float("-inf")
        self._dirty = False

    def observe(self, listing_id: str, ttft_ms: float) -> None:
        self._live[listing_id] = observe(self._live.get(listing_id), ttft_ms)
        self._dirty = True

    def snapshot(self) -> FrozenMapping[str, SpeedStats]:
        now = self._clock()
        if self._dirty and now - self._taken_at >= SNAPSHOT_EVERY:
            self._snapshot, self._taken_at, self._dirty = FrozenMapping(self._live), now, False
        return self._snapshot


class KeyDefaults:
    """Each key's routing defaults (stored as JSON on the key), parsed once per loaded principal.

    The key cache hands out the same principal (and `routing` dict) until the key is reloaded, so
    the parse is remembered against that dict's identity; a reload brings a new dict and a new
    parse. Stored defaults were validated when saved; one that no longer parses (a rule tightened
    since) is ignored and logged rather than failing every request of the key."""

    def __init__(self) -> None:
        self._parsed: dict[str, tuple[object, Preferences]] = {}

    def of(self, key_id: str, routing: Mapping[str, Any] | None) -> Preferences:
        if not routing:
            return NO_PREFERENCES
        cached = self._parsed.get(key_id)
        if cached is not None and cached[0] is routing:
            return cached[1]
        try:
            parsed = parse_preferences(dict(routing))
        except InvalidPreferences as exc:
            log.warning("key_routing_ignored", key_id=key_id, error=exc.message)
            parsed = NO_PREFERENCES
        self._parsed[key_id] = (routing, parsed)
        return parsed


def request_preferences(body: Mapping[str, Any]) -> Preferences:
    """The body's `provider` object, or 400 naming the offending field."""
    raw = body.get("provider")
    if raw is None:
        return NO_PREFERENCES
    try:
        return parse_preferences(raw)
    except InvalidPreferences as exc:
        raise InvalidRequest(exc.message, param=exc.param or "provider") from None


def routes_for(
    svc: ProxyServices,
    model: str,
    request_id: str,
    *,
    body_size: int,
    max_tokens: int | None,
    preferences: Preferences,
    buyer_id: str,
    key_defaults: Preferences = NO_PREFERENCES,
) -> list[Route]:
    """Listings to try, best first, never one of `buyer_id`'s own. 404 if nothing serves the
    model at all; `why_none`'s error if listings exist but every one is excluded."""
    tables = svc.listings.index.tables_for(model)  # routes and their tables: one snapshot
    if not tables.routes:
        raise ModelNotFound(f"The model `{model}` does not exist or no active listing serves it.", param="model")
    unroutable = svc.breaker_view.unroutable()
    open_breakers = frozenset(lid for lid, verdict in unroutable.items() if verdict is Verdict.SKIP)
    ctx = RoutingContext(
        candidates=tables.routes,
        now=svc.clock(),
        seed=zlib.crc32(request_id.encode()),
        prompt_tokens_estimate=max(1, body_size // _BYTES_PER_TOKEN),
        max_tokens=max_tokens,
        preferences=preferences,
        key_defaults=key_defaults,
        stats=svc.speed.snapshot(),
        open_breakers=open_breakers,
        exhausted_until=svc.exhausted_until,
        limit=svc.settings.upstream_attempts * 2,  # spares for listings the loop must still skip
        buyer_id=buyer_id,
    )
    decision = route(ctx, tables)
    if not decision.routes:
        raise why_none(decision, model)
    return list(decision.routes)


def why_none(decision: RoutingDecision, model: str) -> GatewayError:
    """The buyer's answer when every listing was excluded: no room (429, with when to come back),
    every provider failing (503), or nothing left that the buyer's preferences allow (404)."""
    excluded = decision.excluded()
    now = decision.context.now
    resting = [
        decision.context.exhausted_until[lid] - now
        for lid, why in excluded.items()
        if why is Exclusion.CAPACITY_EXHAUSTED
    ]
    if resting:
        wait = max(1, math.ceil(min(resting)))
        return RateLimited(
            "Every listing for this model is at its capacity limit right now. Please retry shortly.",
            headers={"retry-after": str(wait)},
        )
    reasons = set(excluded.values())
    if Exclusion.BREAKER_OPEN in reasons:
        return Unavailable("Every provider for this model is failing right now. Please retry shortly.")
    if reasons == {Exclusion.OWN_LISTING}:
        return ModelNotFound(
            f"Every listing for `{model}` is your own, and your own listings are never routed to your "
            "requests (a request must not earn money for the account that pays for it).",
            param="provider",
        )
    own = "; your own listings are never routed to your requests" if Exclusion.OWN_LISTING in reasons else ""
    return ModelNotFound(
        f"No listing for `{model}` satisfies this request's provider preferences "
        f"(order, only, ignore, max_price, allow_fallbacks){own}.",
        param="provider",
    )
