"""The composition root: `create_app(settings)` builds the ASGI app; its lifespan owns every pool.

Each package contributes its `/api` routes and its background work (`<package>.component`: `routes()`
and `running(services, supervisor)`); this module combines them, so adding a package is one line in
`COMPONENTS`. Every `/api` route carries its OpenAPI metadata (apiroute.py), and `/openapi.json` is
generated from the app's own `/api` route table (openapi.py). Nothing is global: tests build as
many independent apps as they like. The services (server/services.py) are built when the lifespan
starts and set on `app.state.services`, which the `/api` sub-app shares.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Match, Mount, Route
from starlette.types import Scope

from aichat_gateway.accounts import component as accounts
from aichat_gateway.accounts.backend import SessionBackend, auth_error_response, live_session_role
from aichat_gateway.apiroute import ApiRoute
from aichat_gateway.billing import component as billing
from aichat_gateway.config.catalog import load_catalog
from aichat_gateway.config.logging import configure_logging
from aichat_gateway.config.settings import Settings
from aichat_gateway.dashboard.site import build_site
from aichat_gateway.marketplace import component as marketplace
from aichat_gateway.marketplace.vault import Vault
from aichat_gateway.metrics import Metrics
from aichat_gateway.proxy import component as proxy
from aichat_gateway.proxy.edge import exception_handlers, request_context
from aichat_gateway.proxy.hotpath import GatewayApp
from aichat_gateway.proxy.tokens import TokenCounter
from aichat_gateway.server import openapi, ops
from aichat_gateway.server.services import Base, Services, open_services
from aichat_gateway.server.worker import build_worker
from aichat_gateway.supervisor import Supervisor


class Component(Protocol):
    """A package's part in the app (see each `<package>/component.py`)."""

    def routes(self) -> list[ApiRoute]: ...

    def running(self, svc: Services, supervisor: Supervisor) -> AbstractAsyncContextManager[None]: ...


# Started in this order (the listing snapshot is loaded before the proxy's recovery reads it) and
# stopped in reverse.
COMPONENTS: tuple[Component, ...] = (accounts, marketplace, billing, proxy)


class PagesMount(Mount):
    """The dashboard at the root, for every path but `/v1`'s: an unknown `/v1` path (an SDK of
    tomorrow calling an endpoint we lack) stays an OpenAI-shaped 404, never an HTML page."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if path == "/v1" or path.startswith("/v1/"):
            return Match.NONE, {}
        return super().matches(scope)


def api_routes() -> list[ApiRoute]:
    """Every package's `/api` routes (paths relative to the `/api` mount), in `COMPONENTS` order."""
    return [route for component in COMPONENTS for route in component.routes()]


class AppState(State):
    """Starlette's `State`, its values also kept as real attributes.

    `State` keeps them only in a dict behind `__getattr__`, so each `state.x` first fails the normal
    lookup and builds an AttributeError, message formatted, before `__getattr__` finds it: the hot
    path reads `app.state.services` once per request (docs/performance.md has the measurement).
    Item access and iteration see the same values.
    """

    def __setattr__(self, key: str, value: Any) -> None:
        object.__setattr__(self, key, value)
        self._state[key] = value

    def __delattr__(self, key: str) -> None:
        object.__delattr__(self, key)
        del self._state[key]


def create_app(
    settings: Settings,
    *,
    configure_logs: bool = True,
    clock: Callable[[], float] = time.time,
    adjust: Callable[[Services], Services] | None = None,
) -> Starlette:
    """`clock` (wall time, seconds) drives every window and deadline: tests pass a fake one; so is
    `adjust`, which may swap services (a recording hook, a fake transport) once they are built."""
    base = Base(
        settings=settings,
        clock=clock,
        catalog=load_catalog(),
        vault=Vault(settings.secret_keys),
        metrics=Metrics(),
        tokens=TokenCounter(),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(base) as opened, AsyncExitStack() as running:
            svc = adjust(opened) if adjust is not None else opened
            app.state.services = svc
            for component in COMPONENTS:
                await running.enter_async_context(component.running(svc, svc.supervisor))
            # Background jobs and periodic tasks (server/worker.py) unless GATEWAY_WORKER_IN_SERVE=0;
            # cancelled at shutdown, the worker hands its running jobs back to the queue.
            app.state.job_worker = build_worker(settings, svc.db, clock) if settings.worker_in_serve else None
            if app.state.job_worker is not None:
                svc.supervisor.start("jobs", functools.partial(app.state.job_worker.run, asyncio.Event()))
            # On the way out the background tasks stop first, then each component finishes (in
            # reverse order), then the pools close.
            running.push_async_callback(svc.supervisor.stop)
            yield

    if configure_logs:
        configure_logging(settings.log_level, settings.log_json)

    api = Starlette(
        routes=api_routes(),
        middleware=[
            Middleware(
                AuthenticationMiddleware,
                backend=SessionBackend(settings, session_of=live_session_role),
                on_error=auth_error_response,
            )
        ],
        exception_handlers=exception_handlers(),
    )
    site = build_site(settings) if settings.dashboard else None
    app = GatewayApp(
        hot_paths=proxy.hot_paths(),
        routes=[
            Route("/healthz", ops.healthz),
            Route("/readyz", ops.readyz),
            Route("/metrics", ops.metrics_endpoint),
            Route("/openapi.json", openapi.openapi_endpoint(api.routes), methods=["GET"]),
            Mount("/api", app=api),
            # Last: the dashboard's pages see only what nothing above serves (GATEWAY_DASHBOARD=0: none).
            *([PagesMount("", app=site)] if site is not None else []),
        ],
        middleware=[Middleware(request_context)],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    # One state object for both apps: handlers under /api see the same services.
    app.state = api.state = AppState()
    if site is not None:
        site.state = app.state
    app.state.settings = settings
    app.state.base = base
    return app


def app_from_env() -> Starlette:
    """Zero-argument factory for `uvicorn --factory` and multi-worker serving."""
    from aichat_gateway.config.settings import load_settings

    return create_app(load_settings())
