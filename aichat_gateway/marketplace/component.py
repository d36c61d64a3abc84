"""The marketplace as the app sees it: its `/api` routes and the work it runs in the background.

Background: the listing snapshot follows changes (pub/sub, and a poll as a safety net), and the
breaker view follows breaker changes the same way. The snapshot is loaded before the app serves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aichat_gateway.apiroute import ApiRoute
from aichat_gateway.marketplace import api
from aichat_gateway.marketplace.services import MarketplaceServices
from aichat_gateway.supervisor import Supervisor


def routes() -> list[ApiRoute]:
    return api.routes()


@asynccontextmanager
async def running(svc: MarketplaceServices, supervisor: Supervisor) -> AsyncIterator[None]:
    await svc.listings.refresh()
    poll = svc.settings.listing_refresh_interval
    supervisor.start("listing-changes", svc.listings.listen_for_changes)
    supervisor.every("listing-poll", poll, svc.listings.refresh)
    supervisor.start("breaker-changes", svc.breaker_view.listen)
    supervisor.every("breaker-poll", poll, svc.breaker_view.refresh)
    yield
