"""Operational endpoints: liveness, readiness and Prometheus metrics.

`/metrics` names models and listing ids: with `GATEWAY_METRICS_TOKEN` set it answers only a
scraper that sends `Authorization: Bearer <token>`; anyone else gets a 401 with no metric in it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import asyncpg
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import SecretStr
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.proxy.errors import AuthenticationFailed
from aichat_gateway.server.services import services

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
            await services(request).db.fetchval("SELECT 1")
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def _probe_redis(request: Request) -> str:
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT):
            await services(request).redis.ping()
    except (OSError, TimeoutError, RedisError) as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header is `Bearer <token>` (the scheme in any case). The digests
    are compared in constant time, so the timing tells neither how much of a guess was right nor
    how long the token is."""
    scheme, _, credentials = (authorization or "").partition(" ")
    presented = credentials.strip() if scheme.lower() == "bearer" else ""
    # Starlette decodes header bytes as latin-1: encoding back gives the bytes that were sent.
    given = hashlib.sha256(presented.encode("latin-1")).digest()
    # bool(presented): an empty token (Settings copied without validation) must not match no header.
    return hmac.compare_digest(given, hashlib.sha256(token.encode()).digest()) and bool(presented)


async def metrics_endpoint(request: Request) -> Response:
    token: SecretStr | None = services(request).settings.metrics_token
    if token is not None and not bearer_matches(request.headers.get("authorization"), token.get_secret_value()):
        raise AuthenticationFailed(
            "/metrics needs Authorization: Bearer <the GATEWAY_METRICS_TOKEN of this gateway>",
            headers={"www-authenticate": 'Bearer realm="metrics"'},
        )
    return Response(services(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
