"""Lua scripts queued on anyone's Redis pipeline: shared by marketplace (capacity, breakers) and
billing (holds), which may not import each other.

The hot path has a budget of two Redis round trips per request, so scripts are queued on the
caller's pipeline and each returns a `Pending` that turns the pipeline's results into a value.
The hot path's pipelines are `Batch`es: the same commands on the wire as redis-py's `Pipeline`,
without the per-call machinery around them.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files
from typing import Any, Generic, Protocol, TypeVar

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aichat_gateway.redismux import pack_commands
from aichat_gateway.redispool import LeanConnectionPool

T = TypeVar("T")
U = TypeVar("U")


class Queue(Protocol):
    """What scripts and commands are queued on: a `Batch`, or a redis-py `Pipeline`."""

    def __len__(self) -> int: ...

    def execute_command(self, *args: Any) -> Any: ...


class Batch:
    """Commands sent in one write on one pooled connection, replies read in order: one round trip.

    What redis-py's `Pipeline(transaction=False).execute(raise_on_error=False)` does, without what
    the hot path never uses (transactions, WATCH, registered scripts, per-command reply callbacks,
    timing hooks): measurably fewer instructions per request (docs/performance.md).
    Replies are as Redis sent them (hiredis-parsed: ints, bytes, lists); an error reply, NOSCRIPT
    included, stands in its command's place. A connection error is tried once more on a fresh
    connection (after a Redis restart every pooled socket is dead), as the pool's own `Retry` does
    for a Pipeline; a timeout is not. So queue only what is safe to run twice: the scripts here
    are keyed by request id, and settlement stores one usage row per request id.
    """

    __slots__ = ("_commands", "_redis")

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._commands: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._commands)

    def execute_command(self, *args: Any) -> None:
        self._commands.append(args)

    async def execute(self) -> list[Any]:
        if not self._commands:
            return []
        pool = self._redis.connection_pool
        if isinstance(pool, LeanConnectionPool) and pool.multiplexer is not None:
            return await pool.multiplexer.execute(pack_commands(self._commands), len(self._commands))
        conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            try:
                return await self._send_and_read(conn)
            except RedisConnectionError:
                await conn.disconnect()
                return await self._send_and_read(conn)  # reconnects
        finally:
            # _send_and_read drops the socket on any error or cancellation, so a connection with
            # unread replies never goes back into the pool.
            await pool.release(conn)

    async def _send_and_read(self, conn: AbstractConnection) -> list[Any]:
        data = pack_commands(self._commands)
        replies: list[Any] = []
        try:
            # One deadline (the connection's socket timeout) for the whole round trip: redis-py
            # arms a timer per reply and runs each write as a task under wait_for (measurable at two
            # batches per request: docs/performance.md).
            async with asyncio.timeout(conn.socket_timeout):
                if not conn.is_connected:
                    await conn.connect()  # type: ignore[no-untyped-call]
                await conn._send_packed_command([data])
                for _ in self._commands:
                    try:
                        replies.append(await conn.read_response(timeout=math.inf))
                    except ResponseError as exc:
                        replies.append(exc)
        except TimeoutError:
            await conn.disconnect(nowait=True)  # replies may still arrive: never reuse the socket
            raise RedisTimeoutError("Timeout talking to Redis") from None
        except OSError as exc:
            await conn.disconnect(nowait=True)
            raise RedisConnectionError(f"Error talking to Redis: {exc}") from exc
        except BaseException:
            await conn.disconnect(nowait=True)  # cancelled mid-batch: unread replies
            raise
        return replies


class Pending(Generic[T]):
    """Something queued on the caller's pipeline; `resolve` turns that pipeline's results into T.

    Execute the pipeline with `raise_on_error=False` (otherwise one NOSCRIPT hides every other
    command's result, e.g. a buyer hold that did succeed) and resolve every Pending you queued:
    that is where NOSCRIPT is retried and any other error is raised.
    """

    __slots__ = ("_resolve",)

    def __init__(self, resolve: Callable[[Sequence[Any]], Awaitable[T]]) -> None:
        self._resolve = resolve

    async def resolve(self, results: Sequence[Any]) -> T:
        return await self._resolve(results)

    def map(self, convert: Callable[[T], U]) -> Pending[U]:
        async def resolve(results: Sequence[Any]) -> U:
            return convert(await self._resolve(results))

        return Pending(resolve)

    @classmethod
    def ready(cls, value: T) -> Pending[T]:
        """Decided without Redis: nothing was queued."""

        async def resolve(_results: Sequence[Any]) -> T:
            return value

        return cls(resolve)


class LuaScript:
    """A packaged Lua script (<package>/lua/<name>.lua) queued as a bare EVALSHA on any pipeline.

    Not redis-py's `register_script`: on a pipeline that makes every `execute()` send SCRIPT EXISTS
    first, one more round trip per request. A bare EVALSHA after a Redis restart (empty script
    cache) fails with NOSCRIPT *without running*, so it is safe to run it again with EVAL, which
    also caches it on the node that owns the keys (no keyless SCRIPT LOAD, which Redis Cluster
    would send to some other node): one extra round trip per script per restart.
    """

    def __init__(self, redis: Redis, package: str, name: str) -> None:
        self.redis = redis
        self.source = files(package).joinpath("lua", f"{name}.lua").read_text("utf-8")
        self.sha = hashlib.sha1(self.source.encode("utf-8"), usedforsecurity=False).hexdigest()

    def queue(
        self, pipe: Queue, keys: Sequence[str], args: Sequence[str | int], parse: Callable[[Any], T]
    ) -> Pending[T]:
        index = len(pipe)
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)

        async def resolve(results: Sequence[Any]) -> T:
            raw = results[index]
            if isinstance(raw, NoScriptError):
                raw = await self.run_uncached(keys, args)
            elif isinstance(raw, BaseException):
                raise raw
            return parse(raw)

        return Pending(resolve)

    async def run_uncached(self, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        return await self.redis.eval(self.source, len(keys), *keys, *args)


async def run_one(redis: Redis, queue: Callable[[Batch], Pending[T]]) -> T:
    """Queue on a batch of its own, run it and resolve."""
    batch = Batch(redis)
    pending = queue(batch)
    return await pending.resolve(await batch.execute())


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that redis-py swallowed.

    On Python 3.11, `asyncio.wait_for` (which redis-py uses to send commands) drops a cancel that
    arrives as the inner write completes; the task then keeps its pending cancel request but runs
    on, and a shutdown would wait forever for a listening loop. `Task.cancelling()` still shows
    the request: loops that wait on Redis call this after each wait.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def as_int(value: Any) -> int:
    """A Redis reply (int, bytes or str; a zset score may look like "1.7e+12") as an int."""
    if isinstance(value, int):
        return value
    text = value.decode() if isinstance(value, bytes) else str(value)
    return int(text) if text.lstrip("-").isdigit() else int(float(text))
