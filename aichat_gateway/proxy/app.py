"""The app factory: `create_app(settings)` builds the ASGI app; `lifespan` owns every pool.

State lives on `app.state` (settings, db, redis and the per-process caches); nothing is global,
so tests build as many independent apps as they like.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Mount, Route

from aichat_gateway.accounts.api import routes as account_routes
from aichat_gateway.accounts.backend import SessionBackend, auth_error_response
from aichat_gateway.accounts.keys import KeyCache
from aichat_gateway.config.logging import configure_logging
from aichat_gateway.config.settings import Settings
from aichat_gateway.proxy import ops
from aichat_gateway.proxy.background import Supervisor
from aichat_gateway.proxy.edge import exception_handlers, request_context


def create_app(settings: Settings, *, configure_logs: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=10)
        redis = Redis.from_url(settings.redis_url, decode_responses=False)
        supervisor = Supervisor()
        keys = KeyCache(db, redis, settings)
        app.state.settings = settings
        app.state.db = db
        app.state.redis = redis
        app.state.keys = keys
        app.state.supervisor = supervisor
        supervisor.start("key-revocations", keys.listen_for_revocations)
        supervisor.every("key-last-used", 5.0, keys.flush_last_used)
        try:
            yield
        finally:
            await supervisor.stop()
            await keys.flush_last_used()
            await redis.aclose()
            await db.close()

    if configure_logs:
        configure_logging(settings.log_level, settings.log_json)

    api = Starlette(
        routes=[*account_routes()],
        middleware=[
            Middleware(AuthenticationMiddleware, backend=SessionBackend(settings), on_error=auth_error_response)
        ],
    )
    app = Starlette(
        routes=[
            Route("/healthz", ops.healthz),
            Route("/readyz", ops.readyz),
            Mount("/api", app=api),
        ],
        middleware=[Middleware(request_context)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


def app_from_env() -> Starlette:
    """Zero-argument factory for `uvicorn --factory` and multi-worker serving."""
    from aichat_gateway.config.settings import load_settings

    return create_app(load_settings())
