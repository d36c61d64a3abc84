"""The app factory: `create_app(settings)` builds the ASGI app; `lifespan` owns every pool.

State lives on `app.state` (settings, pools and the per-process caches); nothing is global, so
tests build as many independent apps as they like. The `/api` sub-app shares the same state.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis
from redis.asyncio.retry import Retry  # not redis.retry's: the asyncio client awaits what it returns
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Mount, Route

from aichat_gateway.accounts import sessions
from aichat_gateway.accounts.api import routes as account_routes
from aichat_gateway.accounts.backend import SessionBackend, auth_error_response, live_session_role
from aichat_gateway.accounts.errors import InvalidInput
from aichat_gateway.accounts.keys import KeyCache
from aichat_gateway.accounts.session_api import routes as session_routes
from aichat_gateway.accounts.sessioncache import SessionCache
from aichat_gateway.billing import seller_api, topups
from aichat_gateway.billing.api import routes as billing_routes
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.billing.meter import Meter
from aichat_gateway.billing.reconcile import Reconciler
from aichat_gateway.billing.settle import Settler
from aichat_gateway.config.catalog import load_catalog
from aichat_gateway.config.logging import configure_logging, get_logger
from aichat_gateway.config.settings import Settings
from aichat_gateway.marketplace.api import routes as marketplace_routes
from aichat_gateway.marketplace.breaker import Breakers, BreakerView
from aichat_gateway.marketplace.capacity import Capacity
from aichat_gateway.marketplace.errors import InvalidPreferences
from aichat_gateway.marketplace.preferences import dump_preferences, parse_preferences
from aichat_gateway.marketplace.resting import Rests
from aichat_gateway.marketplace.snapshot import ListingSnapshot
from aichat_gateway.marketplace.stats import ListingStatsStore
from aichat_gateway.marketplace.vault import Vault
from aichat_gateway.proxy import chat, openapi, ops, quote
from aichat_gateway.proxy.background import Supervisor
from aichat_gateway.proxy.edge import exception_handlers, request_context
from aichat_gateway.proxy.exposure import RecentEvents
from aichat_gateway.proxy.hotpath import GatewayApp
from aichat_gateway.proxy.keycheck import check_provider_key, skip_key_check
from aichat_gateway.proxy.metrics import Metrics, metrics_endpoint
from aichat_gateway.proxy.recovery import Recovery
from aichat_gateway.proxy.relay import UsageDrain
from aichat_gateway.proxy.routing import KeyDefaults, SpeedBoard
from aichat_gateway.proxy.tokens import TokenCounter
from aichat_gateway.proxy.upstream import create_upstream_client
from aichat_gateway.proxy.worker import build_worker
from aichat_gateway.redispool import LeanConnectionPool

log = get_logger(__name__)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def create_db_pool(settings: Settings) -> asyncpg.Pool:
    return await asyncpg.create_pool(settings.database_url, min_size=1, max_size=10, init=_init_connection)


def validate_key_routing(value: object) -> dict[str, Any]:
    """A key's routing defaults, read exactly as a request's `provider` object, normalised to store.

    Given to accounts on app.state (accounts must not import marketplace); refusals become its
    InvalidInput with the field renamed from "provider..." to "routing...".
    """
    try:
        return dump_preferences(parse_preferences(value))
    except InvalidPreferences as exc:
        param = "routing" + (exc.param or "provider").removeprefix("provider")
        message = exc.message
        if message.startswith("provider"):
            message = "routing" + message.removeprefix("provider")
        raise InvalidInput(message, param=param) from None


# A partial batch waits this long for more: usage rows appear within it, and a busy gateway writes a
# few large transactions a second instead of hundreds of small ones.
SETTLE_LINGER_SECONDS = 0.25


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


# Expired session rows go in batches (sessions.prune), at most this many batches per run.
SESSION_PRUNE_INTERVAL = 600.0
SESSION_PRUNE_MAX_BATCHES = 20


async def prune_sessions(db: asyncpg.Pool, clock: Callable[[], float]) -> None:
    total = 0
    for _ in range(SESSION_PRUNE_MAX_BATCHES):
        pruned = await sessions.prune(db, clock())
        total += pruned
        if pruned < sessions.PRUNE_BATCH:
            break
    if total:
        log.info("sessions_pruned", count=total)


async def reconcile_balances(reconciler: Reconciler, metrics: Metrics) -> None:
    metrics.balance_repairs.inc(len(await reconciler.run_once()))


async def observe_backlog(settler: Settler, metrics: Metrics) -> None:
    metrics.settlement_backlog.set(await settler.backlog())


class AppState(State):
    """Starlette's `State`, its values also kept as real attributes.

    `State` keeps them only in a dict behind `__getattr__`, so each `state.x` first fails the normal
    lookup and builds an AttributeError, message formatted, before `__getattr__` finds it: ~37 per
    request on the hot path. As real attributes: 8 % fewer instructions per request (callgrind,
    loadtests/instructions.py: 1.95 M -> 1.78 M). Item access and iteration see the same values.
    """

    def __setattr__(self, key: str, value: Any) -> None:
        object.__setattr__(self, key, value)
        self._state[key] = value

    def __delattr__(self, key: str) -> None:
        object.__delattr__(self, key)
        del self._state[key]


def create_app(settings: Settings, *, configure_logs: bool = True, clock: Callable[[], float] = time.time) -> Starlette:
    """`clock` (wall time, seconds) drives every window and deadline: tests pass a fake one."""
    catalog = load_catalog()
    vault = Vault(settings.secret_keys)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = await create_db_pool(settings)
        # redis-py's default pool refuses ("Too many connections") past 100; a blocking pool would
        # wait instead but costs a lock per command (~8 % of streams/s in `make bench`), so the
        # plain pool gets a ceiling no sane process reaches.
        # One retry on a broken connection: after a Redis restart every pooled connection is dead,
        # and each would otherwise fail one request. Only connection errors (nothing ran), never
        # timeouts (the command may have run).
        # Hot-path batches share one multiplexed connection (redismux.py); the rest uses the pool.
        pool = LeanConnectionPool.from_url(
            settings.redis_url,
            max_connections=settings.redis_max_connections,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            multiplex=True,
        )
        redis = Redis(connection_pool=pool)
        upstream = create_upstream_client(settings)
        supervisor = Supervisor()
        state = app.state
        state.db, state.redis, state.upstream, state.supervisor = db, redis, upstream, supervisor
        state.keys = KeyCache(db, redis, settings)
        state.sessions = SessionCache(db, redis, settings)
        state.listings = ListingSnapshot(db, redis, vault, catalog, settings.redis_prefix)
        state.meter = Meter(redis, settings.redis_prefix)
        state.stats = ListingStatsStore(redis, settings.redis_prefix)
        state.breakers = Breakers(
            redis, settings.redis_prefix, settings.breaker_fail_max, settings.breaker_reset_timeout
        )
        state.capacity = Capacity(redis, settings.redis_prefix, clock)
        # listing id -> when this process may try it again: at a capacity cap, or a provider's
        # 429 Retry-After. Per process, so each learns it once; entries simply expire.
        state.exhausted_until = {}
        state.speed = SpeedBoard()
        state.key_defaults = KeyDefaults()
        state.rests = Rests(redis, settings.redis_prefix, clock)
        state.hot = HotBalances(redis, settings.redis_prefix, clock=clock)
        state.recovery = Recovery(state)
        state.recent = RecentEvents()
        state.breaker_view = BreakerView(state.breakers, lambda: state.listings.index.listing_ids())
        state.key_checker = (
            functools.partial(check_provider_key, upstream) if settings.check_listing_keys else skip_key_check
        )
        await state.listings.refresh()
        try:
            await state.recovery.start()
        except (RedisError, OSError) as exc:  # Redis not up yet: the periodic check catches up
            log.warning("redis_epoch_unknown_at_start", error=repr(exc))
        await asyncio.to_thread(state.tokens.load)  # ~0.2 s once, not on the first request
        supervisor.start("key-revocations", state.keys.listen_for_revocations)
        supervisor.start("session-ends", state.sessions.listen)
        supervisor.every("session-prune", SESSION_PRUNE_INTERVAL, functools.partial(prune_sessions, db, clock))
        supervisor.start("listing-changes", state.listings.listen_for_changes)
        supervisor.every("listing-poll", settings.listing_refresh_interval, state.listings.refresh)
        supervisor.every("key-last-used", 5.0, state.keys.flush_last_used)
        supervisor.start("breaker-changes", state.breaker_view.listen)
        supervisor.every("breaker-poll", settings.listing_refresh_interval, state.breaker_view.refresh)
        supervisor.every("hold-sweep", 5.0, state.hot.sweep)  # holds of crashed processes
        supervisor.every("redis-epoch", 5.0, state.recovery.ensure)  # Redis lost its data? (recovery.py)
        settler = build_settler(settings, db, redis, state.hot)
        supervisor.every("settlement-backlog", 5.0, functools.partial(observe_backlog, settler, app.state.metrics))
        reconciler = Reconciler(db, redis, settings.redis_prefix, state.hot)
        supervisor.every(
            "reconcile", settings.reconcile_interval, functools.partial(reconcile_balances, reconciler, state.metrics)
        )
        if settings.settle_in_serve:
            supervisor.start("settlement", functools.partial(settler.run, asyncio.Event()))
        # Background jobs and periodic tasks (proxy/worker.py); cancelled at shutdown, it hands running jobs back.
        state.job_worker = build_worker(settings, db, clock) if settings.worker_in_serve else None
        if state.job_worker is not None:
            supervisor.start("jobs", functools.partial(state.job_worker.run, asyncio.Event()))
        try:
            yield
        finally:
            await supervisor.stop()
            await state.keys.flush_last_used()
            await upstream.aclose()
            await redis.aclose()
            await pool.disconnect()  # a pool handed to Redis() is not closed by it
            await db.close()

    if configure_logs:
        configure_logging(settings.log_level, settings.log_json)

    api = Starlette(
        routes=[
            *account_routes(),
            *session_routes(),
            *marketplace_routes(),
            *quote.routes(),
            *billing_routes(),
            *topups.routes(),
            *seller_api.routes(),
        ],
        middleware=[
            Middleware(
                AuthenticationMiddleware,
                backend=SessionBackend(settings, session_of=live_session_role),
                on_error=auth_error_response,
            )
        ],
        exception_handlers=exception_handlers(),
    )
    app = GatewayApp(
        hot_paths=chat.hot_paths(),
        routes=[
            Route("/healthz", ops.healthz),
            Route("/readyz", ops.readyz),
            Route("/metrics", metrics_endpoint),
            Route("/openapi.json", openapi.openapi_endpoint, methods=["GET"]),
            Mount("/api", app=api),
        ],
        middleware=[Middleware(request_context)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    # One state object for both apps: handlers under /api see the same pools and caches.
    app.state = api.state = AppState()
    app.state.settings = settings
    app.state.clock = clock
    app.state.catalog = catalog
    app.state.vault = vault
    app.state.metrics = Metrics()
    app.state.tokens = TokenCounter()
    app.state.validate_key_routing = validate_key_routing
    app.state.usage_drain = UsageDrain(settings.usage_drain_seconds, settings.usage_drain_bytes)
    return app


def app_from_env() -> Starlette:
    """Zero-argument factory for `uvicorn --factory` and multi-worker serving."""
    from aichat_gateway.config.settings import load_settings

    return create_app(load_settings())
