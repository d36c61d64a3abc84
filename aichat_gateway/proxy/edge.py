"""The HTTP edge: request ids, and the one place where package errors become HTTP responses.

Every response carries `x-request-id` (the caller's, if it sent a sane one, else a new one), and
every log line of the request carries it too. Errors always use OpenAI's JSON shape, on `/v1/*`
and `/api/*` alike, so one client-side handler understands both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any

import asyncpg
import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aichat_gateway.accounts import errors as acc
from aichat_gateway.billing import errors as bil
from aichat_gateway.config.logging import get_logger
from aichat_gateway.marketplace import errors as mkt
from aichat_gateway.proxy import errors as gw

log = get_logger(__name__)
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")


class request_context:  # used like a function in the middleware list
    """Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = begin_request(scope)
        header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        await self.app(scope, receive, send_with_id)


def begin_request(scope: Scope) -> str:
    """Take the caller's request id (if sane) or make one; keep it on the scope and on every log line."""
    given = incoming_request_id(scope)
    request_id = given or f"req_{os.urandom(16).hex()}"
    state = scope.setdefault("state", {})
    state["request_id"] = request_id
    state["request_id_given"] = given is not None
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id)
    return request_id


def charge_id(request_id: str, given: bool) -> str:
    """The id a request's money is booked under (hold, usage event, usage row): unique per
    request even when a client sends the same x-request-id twice, which would otherwise make the
    second request look like a replay of the first and go unbilled."""
    return f"{request_id}.{os.urandom(6).hex()}" if given else request_id


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _SANE_REQUEST_ID.match(text) else None
    return None


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        gw.error_body(message, type_, param, code),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


# Package errors → (status, OpenAI error type). Codes come from the error classes themselves.
_ACCOUNTS: dict[type[acc.AccountsError], tuple[int, str]] = {
    acc.InvalidInput: (400, "invalid_request_error"),
    acc.EmailTaken: (409, "invalid_request_error"),
    acc.InvalidCredentials: (401, "authentication_error"),
    acc.Forbidden: (403, "permission_error"),
    acc.NotFound: (404, "invalid_request_error"),
    acc.TooManyAttempts: (429, "rate_limit_error"),
    acc.StoreUnavailable: (503, "api_error"),
}
_MARKETPLACE: dict[type[mkt.MarketplaceError], tuple[int, str]] = {
    mkt.InvalidListing: (400, "invalid_request_error"),
    mkt.UpstreamRefused: (400, "invalid_request_error"),
    mkt.DuplicateKey: (409, "invalid_request_error"),
    mkt.ListingNotFound: (404, "invalid_request_error"),
    mkt.NotAuthenticated: (401, "authentication_error"),
    mkt.NotPermitted: (403, "permission_error"),
}
_BILLING: dict[type[bil.BillingError], tuple[int, str]] = {
    bil.InvalidBillingInput: (400, "invalid_request_error"),
    bil.InsufficientFunds: (402, "insufficient_quota"),
    bil.NotAuthenticated: (401, "authentication_error"),
    bil.NotPermitted: (403, "permission_error"),
    bil.BillingNotFound: (404, "invalid_request_error"),
    bil.Conflict: (409, "invalid_request_error"),
    bil.WebhookRejected: (400, "invalid_request_error"),
    bil.PaymentsUnavailable: (503, "api_error"),
    bil.LedgerError: (500, "server_error"),
}


def _status_for(table: Mapping[type[Any], tuple[int, str]], exc: Exception) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in table:
            return table[cls]
    return 500, "server_error"


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, gw.GatewayError)
    return error_response(exc.status, exc.message, exc.type, exc.code, exc.param, exc.headers)


async def _accounts_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, acc.AccountsError)
    status, type_ = _status_for(_ACCOUNTS, exc)
    headers = {"retry-after": str(exc.retry_after)} if isinstance(exc, acc.TooManyAttempts) else None
    return error_response(status, exc.message, type_, exc.code, exc.param, headers)


async def _marketplace_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, mkt.MarketplaceError)
    status, type_ = _status_for(_MARKETPLACE, exc)
    return error_response(status, exc.message, type_, exc.code, exc.param)


async def _billing_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, bil.BillingError)
    status, type_ = _status_for(_BILLING, exc)
    return error_response(status, exc.message, type_, exc.code, exc.param)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return error_response(404, f"Unknown path {request.url.path}", "invalid_request_error", "not_found")
    if exc.status_code == 405:
        return error_response(
            405,
            f"Method {request.method} not allowed on {request.url.path}",
            "invalid_request_error",
            "method_not_allowed",
            headers=exc.headers,
        )
    return error_response(exc.status_code, str(exc.detail), "invalid_request_error", None, headers=exc.headers)


# Errors of the stores behind the gateway: not the caller's fault, not a bug: 503, retry shortly.
STORE_ERRORS: tuple[type[Exception], ...] = (
    RedisError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionRefusedError,
)


async def store_unavailable(app_state: Any, exc: Exception) -> Response:
    """The answer when Redis or Postgres failed under a request. After a Redis restart every
    pooled connection is dead and a pipeline is not retried, so the idle ones are dropped at the
    first failure: one failed request per connection in use, not one per pooled connection."""
    log.error("store_unavailable", error=repr(exc))
    services = getattr(app_state, "services", None)  # absent if the lifespan never started
    if isinstance(exc, RedisConnectionError) and services is not None:
        await services.redis.connection_pool.disconnect(inuse_connections=False)
    store = "Redis" if isinstance(exc, RedisError) else "Postgres"
    return error_response(
        503,
        f"The gateway's {store} is unreachable right now; nothing was changed. Please retry shortly.",
        "api_error",
        "service_unavailable",
    )


async def _store_error(request: Request, exc: Exception) -> Response:
    response = await store_unavailable(request.app.state, exc)
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        response.headers["x-request-id"] = request_id
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled_error", path=request.url.path, error=repr(exc), exc_info=exc)
    # Starlette answers this outside the middleware stack, so the request id header is added here.
    request_id = request.scope.get("state", {}).get("request_id")
    return error_response(
        500,
        "Internal error; the request id identifies it in the logs.",
        "server_error",
        "internal_error",
        headers={"x-request-id": request_id} if request_id else None,
    )


def exception_handlers() -> dict[Any, Callable[[Request, Exception], Any]]:
    return {
        gw.GatewayError: _gateway_error,
        acc.AccountsError: _accounts_error,
        mkt.MarketplaceError: _marketplace_error,
        bil.BillingError: _billing_error,
        HTTPException: _http_exception,
        **dict.fromkeys(STORE_ERRORS, _store_error),
        Exception: _unexpected,
    }
