"""Lua scripts queued on anyone's Redis pipeline: shared by marketplace (capacity, breakers) and
billing (holds), which may not import each other.

The hot path has a budget of two Redis round trips per request, so scripts are queued on the
caller's pipeline and each returns a `Pending` that turns the pipeline's results into a value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from importlib.resources import files
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError

T = TypeVar("T")
U = TypeVar("U")


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
        self, pipe: Pipeline, keys: Sequence[str], args: Sequence[str | int], parse: Callable[[Any], T]
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


async def run_one(redis: Redis, queue: Callable[[Pipeline], Pending[T]]) -> T:
    """Queue on a pipeline of its own and resolve: the call path outside the hot path."""
    async with redis.pipeline(transaction=False) as pipe:
        pending = queue(pipe)
        results = await pipe.execute(raise_on_error=False)
    return await pending.resolve(results)


def as_int(value: Any) -> int:
    """A Redis reply (int, bytes or str; a zset score may look like "1.7e+12") as an int."""
    if isinstance(value, int):
        return value
    text = value.decode() if isinstance(value, bytes) else str(value)
    return int(text) if text.lstrip("-").isdigit() else int(float(text))
