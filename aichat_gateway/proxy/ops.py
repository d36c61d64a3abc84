"""Operational endpoints: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

import asyncpg
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

_PROBE_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    """The process is alive and its event loop answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready to serve: Postgres and Redis both answer within the probe timeout."""
    checks = {"postgres": await _probe_postgres(request), "redis": await _probe_redis(request)}
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status_code=200 if ready else 503
    )


async def _probe_postgres(request: Request) -> str:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            await request.app.state.db.fetchval("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def _probe_redis(request: Request) -> str:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            await request.app.state.redis.ping()
    except (OSError, TimeoutError, RedisError) as exc:
        return f"error: {type(exc).__name__}"
    return "ok"
