"""Shared by the tests of Lua scripts on real Redis (capacity, its model, breakers): an injected
clock, the hash-tagged keys' cleanup, and a connection that counts round trips."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import redis as redis_sync
from redis.asyncio import Connection

from tests.support.scratch import TEST_REDIS_URL

START = datetime(2024, 5, 31, 23, 58, 0, tzinfo=UTC).timestamp()  # a minute and a month boundary ahead


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def delete_tagged(prefix: str) -> None:
    """scratch.redis_prefix removes `prefix:*` and `{prefix}*`; our hash tags are `{prefix:l:...}`."""
    client = redis_sync.Redis.from_url(TEST_REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{{{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


class CountingConnection(Connection):
    """Counts packed writes: one per pipeline execute, i.e. one per round trip."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        await super().send_packed_command(command, check_health)
