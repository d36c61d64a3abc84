"""What the dashboard needs from the running app, and the typed way its pages reach it.

The pages call the same package functions as the JSON API (accounts, billing, marketplace), so
they need those packages' services; the composition root's `Services` offers them all (checked by
mypy in server/services.py). The dashboard never imports server.
"""

from __future__ import annotations

from typing import Protocol, cast

from starlette.requests import HTTPConnection

from aichat_gateway.accounts.services import AccountsServices
from aichat_gateway.billing.services import BillingServices
from aichat_gateway.marketplace.services import MarketplaceServices


class DashboardServices(AccountsServices, BillingServices, MarketplaceServices, Protocol):
    pass


def services(conn: HTTPConnection) -> DashboardServices:
    """The services of the app serving this request (the dashboard shares the root's state)."""
    return cast(DashboardServices, conn.app.state.services)
