"""`Batch` and `LeanConnectionPool` against real Redis: what the hot path's round trips rely on.

The behaviours both ways of running a batch share are checked on each (`redis` is parametrized:
checked-out pooled connections, and the multiplexer `serve` uses); pool-only ones use `pooled`.
What only the multiplexer does is in test_redis_mux.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aichat_gateway.redislua import Batch
from aichat_gateway.redispool import LeanConnectionPool
from tests.support.redisbatch import lean_redis, run_batch
from tests.support.scratch import TEST_REDIS_URL
from tests.support.scratch import redis_prefix as scratch_redis_prefix

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("batch") as p:
        yield p


RETRY_ONCE = Retry(NoBackoff(), 1, (RedisConnectionError,))


@pytest.fixture
async def pooled() -> AsyncIterator[Redis]:
    async with lean_redis(TEST_REDIS_URL, retry=RETRY_ONCE) as client:
        yield client


@pytest.fixture(params=["pooled", "multiplexed"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[Redis]:
    async with lean_redis(TEST_REDIS_URL, retry=RETRY_ONCE, multiplex=request.param == "multiplexed") as client:
        yield client


async def test_replies_come_back_in_the_order_the_commands_were_queued(redis: Redis, prefix: str) -> None:
    key = f"{prefix}:n"
    assert await run_batch(redis, ("INCRBY", key, 5), ("INCRBY", key, 2), ("GET", key)) == [5, 7, b"7"]


async def test_an_error_reply_stands_in_its_commands_place_and_the_others_still_run(redis: Redis, prefix: str) -> None:
    text, counter = f"{prefix}:text", f"{prefix}:counter"
    await redis.set(text, "not a number")
    replies = await run_batch(redis, ("INCR", text), ("EVALSHA", "0" * 40, 0), ("INCR", counter))
    assert isinstance(replies[0], ResponseError)
    assert isinstance(replies[1], NoScriptError)  # what LuaScript retries with EVAL
    assert replies[2] == 1


async def test_a_batch_after_redis_dropped_its_connection_runs_once_on_a_new_one(redis: Redis, prefix: str) -> None:
    key = f"{prefix}:n"
    first_id = (await run_batch(redis, ("CLIENT", "ID")))[0]
    async with Redis.from_url(TEST_REDIS_URL) as killer:
        await killer.execute_command("CLIENT", "KILL", "ID", first_id)
    assert await run_batch(redis, ("INCR", key)) == [1]
    assert await redis.get(key) == b"1"


async def test_a_batch_cancelled_while_waiting_leaves_no_unread_reply_for_the_next_one(
    pooled: Redis, prefix: str
) -> None:
    redis = pooled  # a BLPOP would hold up every batch behind it on the multiplexer
    queue = f"{prefix}:queue"
    waiting = asyncio.create_task(run_batch(redis, ("BLPOP", queue, 10)))
    async with Redis.from_url(TEST_REDIS_URL) as other:
        for _ in range(1000):  # polls a condition: the BLPOP has reached Redis
            if b"cmd=blpop" in await other.execute_command("CLIENT", "LIST", "TYPE", "normal"):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the BLPOP never reached Redis")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await other.rpush(queue, "late")  # would be the abandoned connection's next reply
    assert await run_batch(redis, ("ECHO", "mine")) == [b"mine"]


async def test_sequential_batches_reuse_one_pooled_connection(pooled: Redis) -> None:
    ids = {(await run_batch(pooled, ("CLIENT", "ID")))[0] for _ in range(5)}
    assert len(ids) == 1
    pool = pooled.connection_pool
    assert len(pool._in_use_connections) == 0  # every checkout was given back


async def test_the_lean_pool_serves_redis_py_commands_and_pipelines_too(redis: Redis, prefix: str) -> None:
    key = f"{prefix}:k"
    assert await redis.set(key, "v") is True  # redis-py's reply callbacks still apply
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(key)
        pipe.delete(key)
        assert await pipe.execute() == [b"v", 1]


async def test_a_redis_that_never_answers_times_out_once_for_the_whole_batch() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = LeanConnectionPool(host="127.0.0.1", port=port, socket_timeout=0.2)
    mute = Redis(connection_pool=pool)
    batch = Batch(mute)
    for n in range(3):
        batch.execute_command("ECHO", n)
    try:
        with pytest.raises(RedisTimeoutError):
            await batch.execute()
        assert not any(c.is_connected for c in pool._available_connections)  # never reused
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await mute.aclose()
        await pool.disconnect()
