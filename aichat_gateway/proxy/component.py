"""The `/v1` surface as the app sees it: its hot paths, its `/api` routes (the quote) and its
background work: watching for Redis losing its data (recovery.py), every few seconds, after
remembering the current epoch at start; the token counter's encoding is loaded before serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response

from aichat_gateway.apiroute import ApiRoute
from aichat_gateway.config.logging import get_logger
from aichat_gateway.proxy import chat, quote
from aichat_gateway.proxy.services import ProxyServices
from aichat_gateway.supervisor import Supervisor

log = get_logger(__name__)
REDIS_EPOCH_INTERVAL = 5.0


def routes() -> list[ApiRoute]:
    return quote.routes()


def hot_paths() -> dict[str, tuple[str, Callable[[Request], Awaitable[Response]]]]:
    return chat.hot_paths()


@asynccontextmanager
async def running(svc: ProxyServices, supervisor: Supervisor) -> AsyncIterator[None]:
    try:
        await svc.recovery.start()
    except (RedisError, OSError) as exc:  # Redis not up yet: the periodic check catches up
        log.warning("redis_epoch_unknown_at_start", error=repr(exc))
    await asyncio.to_thread(svc.tokens.load)  # ~0.2 s once, not on the first request
    supervisor.every("redis-epoch", REDIS_EPOCH_INTERVAL, svc.recovery.ensure)  # Redis lost its data?
    yield
