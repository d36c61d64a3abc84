"""What the billing package needs from the running app, and the typed way its handlers reach it.

The composition root (`aichat_gateway.server`) builds one frozen services object per app and
checks, through mypy, that it offers everything declared here; billing never imports it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from starlette.requests import HTTPConnection

from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.billing.meter import Meter
from aichat_gateway.coreservices import CoreServices
from aichat_gateway.metrics import Metrics

# Tells the hot view a buyer's settled balance changed by this much (after Postgres committed it).
BalanceHook = Callable[[str, int], Awaitable[None]]


class BillingServices(CoreServices, Protocol):
    @property
    def hot(self) -> HotBalances: ...
    @property
    def meter(self) -> Meter: ...
    @property
    def metrics(self) -> Metrics: ...
    # `hot.credit` in production; a test may hand in another to watch or break it.
    @property
    def on_balance_change(self) -> BalanceHook: ...


def services(conn: HTTPConnection) -> BillingServices:
    """The services of the app serving this request (the /api sub-app shares the root's state)."""
    return cast(BillingServices, conn.app.state.services)
