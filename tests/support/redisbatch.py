"""Shared by the `Batch` tests: a lean-pool Redis client, pooled or multiplexed, and a one-line batch runner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from aichat_gateway.redislua import Batch
from aichat_gateway.redispool import LeanConnectionPool


@asynccontextmanager
async def lean_redis(url: str, **pool_options: Any) -> AsyncIterator[Redis]:
    pool = LeanConnectionPool.from_url(url, **pool_options)
    client = Redis(connection_pool=pool)
    try:
        yield client
    finally:
        await client.aclose()
        await pool.disconnect()  # a pool handed to Redis() is not closed by it


async def run_batch(redis: Redis, *commands: tuple[object, ...]) -> list[object]:
    batch = Batch(redis)
    for command in commands:
        batch.execute_command(*command)
    return await batch.execute()
