"""The services every package's handlers need: settings, the clock, the Postgres and Redis pools.

Each package declares what it needs from the running app as a Protocol (`<package>/services.py`);
they all start from this one, and the composition root's `Services` (server/services.py) satisfies
them all (checked by mypy there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import asyncpg
from redis.asyncio import Redis

from aichat_gateway.config.settings import Settings


class CoreServices(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def clock(self) -> Callable[[], float]: ...  # wall time, seconds: tests pass a fake one
    @property
    def db(self) -> asyncpg.Pool: ...
    @property
    def redis(self) -> Redis: ...
