"""What the accounts package needs from the running app, and the typed way its handlers reach it.

The composition root (`aichat_gateway.server`) builds one frozen services object per app and
checks, through mypy, that it offers everything declared here; accounts never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, cast

import asyncpg
from redis.asyncio import Redis
from starlette.requests import HTTPConnection

from aichat_gateway.accounts.keycache import KeyCache
from aichat_gateway.accounts.keysettings import RoutingValidator
from aichat_gateway.accounts.sessioncache import SessionCache
from aichat_gateway.config.settings import Settings


class AccountsServices(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def clock(self) -> Callable[[], float]: ...
    @property
    def db(self) -> asyncpg.Pool: ...
    @property
    def redis(self) -> Redis: ...
    @property
    def keys(self) -> KeyCache: ...
    @property
    def sessions(self) -> SessionCache: ...
    # A key's routing defaults are read as a request's `provider` object: the marketplace's parser,
    # handed in by the composition root (accounts must not import marketplace).
    @property
    def validate_key_routing(self) -> RoutingValidator: ...


def services(conn: HTTPConnection) -> AccountsServices:
    """The services of the app serving this request (the /api sub-app shares the root's state)."""
    return cast(AccountsServices, conn.app.state.services)
