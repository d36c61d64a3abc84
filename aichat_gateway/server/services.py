"""The app's services: one frozen object holding every pool, cache and client, built by the lifespan.

Handlers never reach into an untyped bag: each package declares the services it needs as a
Protocol (`accounts.services.AccountsServices`, `marketplace…`, `billing…`, `proxy…`) with a typed
accessor, and `Services` below is checked by mypy to offer all of them (`_offers_what_each_package_needs`).
The object is built once per process by `open_services`, which also closes everything it opened.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry  # not redis.retry's: the asyncio client awaits what it returns
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from starlette.requests import HTTPConnection

from aichat_gateway.accounts.errors import InvalidInput
from aichat_gateway.accounts.keycache import KeyCache
from aichat_gateway.accounts.keysettings import RoutingValidator
from aichat_gateway.accounts.services import AccountsServices
from aichat_gateway.accounts.sessioncache import SessionCache
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.billing.meter import Meter
from aichat_gateway.billing.services import BalanceHook, BillingServices
from aichat_gateway.config.catalog import Catalog
from aichat_gateway.config.settings import Settings
from aichat_gateway.dashboard.services import DashboardServices
from aichat_gateway.marketplace.breaker import Breakers, BreakerView
from aichat_gateway.marketplace.capacity import Capacity
from aichat_gateway.marketplace.errors import InvalidPreferences
from aichat_gateway.marketplace.preferences import dump_preferences, parse_preferences
from aichat_gateway.marketplace.resting import Rests
from aichat_gateway.marketplace.services import KeyChecker, MarketplaceServices
from aichat_gateway.marketplace.snapshot import ListingSnapshot
from aichat_gateway.marketplace.stats import ListingStatsStore
from aichat_gateway.marketplace.vault import Vault
from aichat_gateway.metrics import Metrics
from aichat_gateway.proxy.exposure import RecentEvents, account_for_loss
from aichat_gateway.proxy.keycheck import check_provider_key, skip_key_check
from aichat_gateway.proxy.recovery import Recovery, restore_capacity
from aichat_gateway.proxy.relay import UsageDrain
from aichat_gateway.proxy.routing import KeyDefaults, SpeedBoard
from aichat_gateway.proxy.services import ProxyServices
from aichat_gateway.proxy.tokens import TokenCounter
from aichat_gateway.proxy.upstream import Upstream, create_upstream_client
from aichat_gateway.redispool import LeanConnectionPool
from aichat_gateway.supervisor import Supervisor


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    clock: Callable[[], float]
    catalog: Catalog
    vault: Vault
    metrics: Metrics
    tokens: TokenCounter
    db: asyncpg.Pool
    redis: Redis
    upstream: Upstream
    supervisor: Supervisor
    keys: KeyCache
    sessions: SessionCache
    listings: ListingSnapshot
    meter: Meter
    stats: ListingStatsStore
    breakers: Breakers
    breaker_view: BreakerView
    capacity: Capacity
    rests: Rests
    hot: HotBalances
    recovery: Recovery
    recent: RecentEvents
    speed: SpeedBoard
    key_defaults: KeyDefaults
    key_checker: KeyChecker
    validate_key_routing: RoutingValidator
    on_balance_change: BalanceHook
    usage_drain: UsageDrain
    exhausted_until: dict[str, float] = field(default_factory=dict)


def _offers_what_each_package_needs(
    s: Services,
) -> tuple[AccountsServices, MarketplaceServices, BillingServices, ProxyServices, DashboardServices]:
    """Never called: mypy checks here that `Services` satisfies every package's Protocol."""
    return s, s, s, s, s


def services(conn: HTTPConnection) -> Services:
    """The services of the app serving this request (the root's own routes: ops, openapi)."""
    return cast(Services, conn.app.state.services)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def create_db_pool(settings: Settings) -> asyncpg.Pool:
    return await asyncpg.create_pool(settings.database_url, min_size=1, max_size=10, init=_init_connection)


def validate_key_routing(value: object) -> dict[str, Any]:
    """A key's routing defaults, read exactly as a request's `provider` object, normalised to store.

    Handed to accounts (which must not import marketplace); refusals become its InvalidInput with
    the field renamed from "provider..." to "routing...".
    """
    try:
        return dump_preferences(parse_preferences(value))
    except InvalidPreferences as exc:
        param = "routing" + (exc.param or "provider").removeprefix("provider")
        message = exc.message
        if message.startswith("provider"):
            message = "routing" + message.removeprefix("provider")
        raise InvalidInput(message, param=param) from None


@dataclass(frozen=True, slots=True)
class Base:
    """What exists before the lifespan opens anything: pure, cheap, shared by the app and its tests."""

    settings: Settings
    clock: Callable[[], float]
    catalog: Catalog
    vault: Vault
    metrics: Metrics
    tokens: TokenCounter


@asynccontextmanager
async def open_services(base: Base) -> AsyncIterator[Services]:
    """Open the pools and build every cache and client on them; close the pools when done."""
    settings, clock = base.settings, base.clock
    prefix = settings.redis_prefix
    db = await create_db_pool(settings)
    # redis-py's default pool refuses ("Too many connections") past 100; a blocking pool would
    # wait instead but costs a lock per command (docs/performance.md), so the plain
    # pool gets a ceiling no sane process reaches. One retry on a broken connection: after a Redis
    # restart every pooled connection is dead, and each would otherwise fail one request. Only
    # connection errors (nothing ran), never timeouts (the command may have run). Hot-path batches
    # share one multiplexed connection (redismux.py); the rest uses the pool.
    pool = LeanConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        multiplex=True,
    )
    redis = Redis(connection_pool=pool)
    upstream = create_upstream_client(settings)
    try:
        listings = ListingSnapshot(db, redis, base.vault, base.catalog, prefix)
        capacity = Capacity(redis, prefix, clock)
        meter = Meter(redis, prefix)
        recent = RecentEvents()
        breakers = Breakers(redis, prefix, settings.breaker_fail_max, settings.breaker_reset_timeout)
        hot = HotBalances(redis, prefix, clock=clock)
        recovery = Recovery(
            redis,
            prefix,
            rebuild=functools.partial(restore_capacity, db, listings, capacity, clock),
            on_loss=functools.partial(
                account_for_loss, recent, clock, db, redis, meter.stream, base.metrics.usage_events_lost
            ),
        )
        checker: KeyChecker = (
            functools.partial(check_provider_key, upstream) if settings.check_listing_keys else skip_key_check
        )
        yield Services(
            settings=settings,
            clock=clock,
            catalog=base.catalog,
            vault=base.vault,
            metrics=base.metrics,
            tokens=base.tokens,
            db=db,
            redis=redis,
            upstream=upstream,
            supervisor=Supervisor(),
            keys=KeyCache(db, redis, settings),
            sessions=SessionCache(db, redis, settings),
            listings=listings,
            meter=meter,
            stats=ListingStatsStore(redis, prefix),
            breakers=breakers,
            breaker_view=BreakerView(breakers, lambda: listings.index.listing_ids()),
            capacity=capacity,
            rests=Rests(redis, prefix, clock),
            hot=hot,
            recovery=recovery,
            recent=recent,
            speed=SpeedBoard(),
            key_defaults=KeyDefaults(),
            key_checker=checker,
            validate_key_routing=validate_key_routing,
            on_balance_change=hot.credit,
            usage_drain=UsageDrain(settings.usage_drain_seconds, settings.usage_drain_bytes),
        )
    finally:
        await upstream.aclose()
        await redis.aclose()
        await pool.disconnect()  # a pool handed to Redis() is not closed by it
        await db.close()
