"""What the `/v1` surface needs from the running app, and the typed way its handlers reach it.

The composition root (`aichat_gateway.server`) builds one frozen services object per app and
checks, through mypy, that it offers everything declared here. The hot path reads the object once
per request (`services(request)`) and then only its slots: as cheap as the attribute reads on
`app.state` it replaced.
"""

from __future__ import annotations

from typing import Protocol, cast

from starlette.requests import HTTPConnection

from aichat_gateway.accounts.keycache import KeyCache
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.billing.meter import Meter
from aichat_gateway.config.catalog import Catalog
from aichat_gateway.coreservices import CoreServices
from aichat_gateway.marketplace.breaker import Breakers, BreakerView
from aichat_gateway.marketplace.capacity import Capacity
from aichat_gateway.marketplace.resting import Rests
from aichat_gateway.marketplace.snapshot import ListingSnapshot
from aichat_gateway.marketplace.stats import ListingStatsStore
from aichat_gateway.metrics import Metrics
from aichat_gateway.proxy.exposure import RecentEvents
from aichat_gateway.proxy.recovery import Recovery
from aichat_gateway.proxy.relay import UsageDrain
from aichat_gateway.proxy.routing import KeyDefaults, SpeedBoard
from aichat_gateway.proxy.tokens import TokenCounter
from aichat_gateway.proxy.upstream import Upstream


class ProxyServices(CoreServices, Protocol):
    @property
    def catalog(self) -> Catalog: ...
    @property
    def upstream(self) -> Upstream: ...
    @property
    def keys(self) -> KeyCache: ...
    @property
    def listings(self) -> ListingSnapshot: ...
    @property
    def meter(self) -> Meter: ...
    @property
    def stats(self) -> ListingStatsStore: ...
    @property
    def breakers(self) -> Breakers: ...
    @property
    def breaker_view(self) -> BreakerView: ...
    @property
    def capacity(self) -> Capacity: ...
    @property
    def rests(self) -> Rests: ...
    @property
    def hot(self) -> HotBalances: ...
    @property
    def recovery(self) -> Recovery: ...
    @property
    def recent(self) -> RecentEvents: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def tokens(self) -> TokenCounter: ...
    @property
    def speed(self) -> SpeedBoard: ...
    @property
    def key_defaults(self) -> KeyDefaults: ...
    @property
    def usage_drain(self) -> UsageDrain: ...
    # listing id -> when this process may try it again: at a capacity cap, or after a provider's
    # 429 Retry-After. Per process, so each learns it once; entries simply expire. Mutable on purpose.
    @property
    def exhausted_until(self) -> dict[str, float]: ...


def services(conn: HTTPConnection) -> ProxyServices:
    """The services of the app serving this request."""
    return cast(ProxyServices, conn.app.state.services)
