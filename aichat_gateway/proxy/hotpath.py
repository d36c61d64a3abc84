"""The gateway's ASGI app: `/v1/*` goes straight to its handlers, everything else through Starlette.

Starlette wraps every request in ServerErrorMiddleware, our request-id middleware, ExceptionMiddleware
and the router, and each wraps `send`: four coroutine hops for every streamed chunk. The `/v1`
paths are fixed and few, so `GatewayApp` answers them itself with the same behaviour (request id
header and log binding, OpenAI-shaped errors, 405 for a wrong method) and lets Starlette do the rest
(`/api`, ops, 404s). Measured: see docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from aichat_gateway.config.logging import get_logger
from aichat_gateway.proxy.edge import STORE_ERRORS, begin_request, error_response, store_unavailable
from aichat_gateway.proxy.errors import GatewayError, MethodNotAllowed

log = get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


class GatewayApp(Starlette):
    def __init__(self, hot_paths: Mapping[str, tuple[str, Handler]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._hot_paths = dict(hot_paths)  # path -> (method, handler)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        entry = self._hot_paths.get(scope["path"]) if scope["type"] == "http" else None
        if entry is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request_id = begin_request(scope)
        method, handler = entry
        try:
            if scope["method"] != method:
                raise MethodNotAllowed(
                    f"Method {scope['method']} not allowed on {scope['path']}", headers={"allow": method}
                )
            response = await handler(Request(scope, receive))
        except GatewayError as exc:
            response = error_response(exc.status, exc.message, exc.type, exc.code, exc.param, exc.headers)
        except STORE_ERRORS as exc:
            response = await store_unavailable(self.state, exc)
        except Exception as exc:
            log.error("unhandled_error", path=scope["path"], error=repr(exc), exc_info=exc)
            response = error_response(
                500, "Internal error; the request id identifies it in the logs.", "server_error", "internal_error"
            )
        response.headers["x-request-id"] = request_id
        await response(scope, receive, send)
