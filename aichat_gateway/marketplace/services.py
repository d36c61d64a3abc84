"""What the marketplace package needs from the running app, and the typed way its handlers reach it.

The composition root (`aichat_gateway.server`) builds one frozen services object per app and
checks, through mypy, that it offers everything declared here; the marketplace never imports it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from starlette.requests import HTTPConnection

from aichat_gateway.config.catalog import Catalog
from aichat_gateway.coreservices import CoreServices
from aichat_gateway.marketplace.breaker import Breakers, BreakerView
from aichat_gateway.marketplace.resting import Rests
from aichat_gateway.marketplace.snapshot import ListingSnapshot
from aichat_gateway.marketplace.stats import ListingStatsStore
from aichat_gateway.marketplace.vault import Vault

# Checks a provider key with its provider: (provider kind, base URL, key) -> None, or raises the
# marketplace's UpstreamRefused. The proxy's adapters know how; the root hands the checker in.
KeyChecker = Callable[[str, str, str], Awaitable[None]]


class MarketplaceServices(CoreServices, Protocol):
    @property
    def catalog(self) -> Catalog: ...
    @property
    def vault(self) -> Vault: ...
    @property
    def listings(self) -> ListingSnapshot: ...
    @property
    def rests(self) -> Rests: ...
    @property
    def stats(self) -> ListingStatsStore: ...
    @property
    def breakers(self) -> Breakers: ...
    @property
    def breaker_view(self) -> BreakerView: ...
    @property
    def key_checker(self) -> KeyChecker: ...


def services(conn: HTTPConnection) -> MarketplaceServices:
    """The services of the app serving this request (the /api sub-app shares the root's state)."""
    return cast(MarketplaceServices, conn.app.state.services)
