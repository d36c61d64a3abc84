"""Billing as the app sees it: its `/api` routes and the work it runs in the background.

Background, in every `serve` process: the hold sweeper (holds of crashed processes), the
reconciler (hot balances against Postgres), the settlement backlog gauge, and — unless
`GATEWAY_SETTLE_IN_SERVE=0` — a settlement worker, one member of the consumer group.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from redis.asyncio import Redis

from aichat_gateway.apiroute import ApiRoute
from aichat_gateway.billing import api, autorecharge, cardpay, savedcards, seller_api, topups
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.billing.reconcile import Reconciler
from aichat_gateway.billing.services import BillingServices
from aichat_gateway.billing.settle import Settler
from aichat_gateway.config.settings import Settings
from aichat_gateway.metrics import Metrics
from aichat_gateway.supervisor import Supervisor

# A partial batch waits this long for more: usage rows appear within it, and a busy gateway writes a
# few large transactions a second instead of hundreds of small ones.
SETTLE_LINGER_SECONDS = 0.25
HOLD_SWEEP_INTERVAL = 5.0
BACKLOG_INTERVAL = 5.0


def routes() -> list[ApiRoute]:
    return [
        *api.routes(),
        *topups.routes(),
        *cardpay.routes(),
        *savedcards.routes(),
        *autorecharge.routes(),
        *seller_api.routes(),
    ]


def build_settler(settings: Settings, db: asyncpg.Pool, redis: Redis, hot: HotBalances) -> Settler:
    """A settlement worker named after this host and process, so a dead one's entries are
    recognisably its own when another member claims them."""
    return Settler(
        db,
        redis,
        settings.redis_prefix,
        settings.platform_fee,
        after_commit=hot.applied,
        consumer=f"{socket.gethostname()}-{os.getpid()}",
        linger=SETTLE_LINGER_SECONDS,
    )


async def sweep_holds(hot: HotBalances) -> None:
    await hot.sweep()  # holds of crashed processes


async def reconcile_balances(reconciler: Reconciler, metrics: Metrics) -> None:
    metrics.balance_repairs.inc(len(await reconciler.run_once()))


async def observe_backlog(settler: Settler, metrics: Metrics) -> None:
    metrics.settlement_backlog.set(await settler.backlog())


@asynccontextmanager
async def running(svc: BillingServices, supervisor: Supervisor) -> AsyncIterator[None]:
    settings = svc.settings
    supervisor.every("hold-sweep", HOLD_SWEEP_INTERVAL, functools.partial(sweep_holds, svc.hot))
    settler = build_settler(settings, svc.db, svc.redis, svc.hot)
    supervisor.every("settlement-backlog", BACKLOG_INTERVAL, functools.partial(observe_backlog, settler, svc.metrics))
    reconciler = Reconciler(svc.db, svc.redis, settings.redis_prefix, svc.hot)
    supervisor.every(
        "reconcile", settings.reconcile_interval, functools.partial(reconcile_balances, reconciler, svc.metrics)
    )
    if settings.settle_in_serve:
        supervisor.start("settlement", functools.partial(settler.run, asyncio.Event()))
    yield
