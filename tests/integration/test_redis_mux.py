"""`Batch` on a multiplexing pool (redismux.py) against real Redis: one shared connection for
every batch of the process, replies matched to batches in order, and what happens when that
connection is killed, refused, mute, or answers LOADING. What a pooled batch does too (reply order,
error replies in place, a killed connection) is checked on both in test_redis_batch.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import BusyLoadingError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aichat_gateway.redispool import LeanConnectionPool
from tests.support.redisbatch import lean_redis, run_batch
from tests.support.scratch import TEST_REDIS_URL
from tests.support.scratch import redis_prefix as scratch_redis_prefix

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("mux") as p:
        yield p


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    async with lean_redis(TEST_REDIS_URL, multiplex=True) as client:
        yield client


async def client_id(redis: Redis) -> int:
    reply = (await run_batch(redis, ("CLIENT", "ID")))[0]
    assert isinstance(reply, int)
    return reply


async def test_concurrent_batches_each_get_their_own_replies_in_order(redis: Redis, prefix: str) -> None:
    async def count(n: int) -> list[object]:
        key = f"{prefix}:{n}"
        return await run_batch(redis, ("INCRBY", key, n), ("INCRBY", key, 1), ("GET", key))

    replies = await asyncio.gather(*(count(n) for n in range(200)))
    assert replies == [[n, n + 1, str(n + 1).encode()] for n in range(200)]


async def test_every_batch_of_the_process_shares_one_connection(redis: Redis) -> None:
    ids = await asyncio.gather(*(client_id(redis) for _ in range(50)))
    ids += [await client_id(redis) for _ in range(5)]
    assert len(set(ids)) == 1
    assert len(redis.connection_pool._in_use_connections) == 0  # nothing checked out of the pool


async def test_a_cancelled_batch_runs_but_its_replies_go_to_nobody(redis: Redis, prefix: str) -> None:
    key = f"{prefix}:n"
    await client_id(redis)  # connected, so the batch below is queued at once
    abandoned = asyncio.create_task(run_batch(redis, ("INCRBY", key, 10)))
    await asyncio.sleep(0)  # it has queued its command and waits for the reply
    abandoned.cancel()
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    assert await run_batch(redis, ("INCRBY", key, 1)) == [11]  # its own reply, not the abandoned one's


async def test_the_database_number_in_the_url_is_selected(prefix: str) -> None:
    key = f"{prefix}:db"
    base, _, db = TEST_REDIS_URL.rpartition("/")
    other_db = 13 if db != "13" else 12
    async with (
        lean_redis(f"{base}/{other_db}", multiplex=True) as on_other,
        Redis.from_url(TEST_REDIS_URL) as on_default,
    ):
        await run_batch(on_other, ("SET", key, "here", "EX", 60))
        try:
            assert await on_other.get(key) == b"here"  # a pooled redis-py read on that database
            assert await on_default.get(key) is None
        finally:
            await on_other.delete(key)


async def test_a_username_and_password_in_the_url_authenticate(redis: Redis) -> None:
    user, password = f"mux-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "+ping")
    address = TEST_REDIS_URL.removeprefix("redis://").split("/")[0]
    pool = LeanConnectionPool.from_url(f"redis://{user}:{password}@{address}/0", multiplex=True)
    wrong = LeanConnectionPool.from_url(f"redis://{user}:not-it@{address}/0", multiplex=True)
    try:
        assert await run_batch(Redis(connection_pool=pool), ("PING",)) == [b"PONG"]
        with pytest.raises(RedisConnectionError):  # AuthenticationError, raised, nothing run
            await run_batch(Redis(connection_pool=wrong), ("PING",))
    finally:
        await pool.disconnect()
        await wrong.disconnect()
        await redis.execute_command("ACL", "DELUSER", user)


async def test_nothing_listening_is_a_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = LeanConnectionPool(host="127.0.0.1", port=port, multiplex=True)
    try:
        with pytest.raises(RedisConnectionError):
            await run_batch(Redis(connection_pool=pool), ("PING",))
    finally:
        await pool.disconnect()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def with_fake_redis(handler: Handler, *, socket_timeout: float | None = None) -> tuple[asyncio.Server, Redis]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = LeanConnectionPool(host="127.0.0.1", port=port, socket_timeout=socket_timeout, multiplex=True)
    return server, Redis(connection_pool=pool)


async def test_a_redis_that_never_answers_times_out_and_the_connection_is_dropped() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # reads nothing, answers nothing

    server, mute = await with_fake_redis(swallow, socket_timeout=0.2)
    try:
        with pytest.raises(RedisTimeoutError):
            await run_batch(mute, ("ECHO", 1), ("ECHO", 2))
        with pytest.raises(RedisTimeoutError):
            await run_batch(mute, ("ECHO", 3))
        assert len(connections) == 2  # the second batch did not queue behind the first's silence
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await mute.connection_pool.disconnect()


async def test_a_redis_still_loading_its_data_raises_a_connection_error_like_a_pooled_read() -> None:
    async def loading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            writer.write(b"-LOADING Redis is loading the dataset in memory\r\n")
        writer.close()

    server, busy = await with_fake_redis(loading)
    try:
        with pytest.raises(BusyLoadingError):  # a ConnectionError: the hot path retries it
            await run_batch(busy, ("PING",))
    finally:
        server.close()
        await busy.connection_pool.disconnect()
