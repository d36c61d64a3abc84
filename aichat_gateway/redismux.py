"""One shared Redis connection per process for the hot path's batches (auto-pipelining).

A `Batch` on a pooled connection costs a checkout, a write and a wake-up per read, per request,
twice. Here every batch of the process goes out on one connection. A batch sent while others wait
for replies is held to the end of the event-loop turn, so batches of concurrent requests leave in
one system call (uvloop sends each `write()` at once); one sent while nothing is in flight goes at
once, adding no latency. Replies are parsed as they arrive (hiredis, in an
`asyncio.Protocol`, no stream reader) and handed to each batch in the order it was sent. Redis
answers a connection's commands in order, so the n-th batch sent gets the n-th group of replies.

What a batch on the pool guaranteed still holds:
- replies come back as Redis sent them, an error reply in its command's place;
- a lost connection fails every batch waiting on it with `ConnectionError`; each is tried once
  more on a new connection (so, as before, queue only what is safe to run twice);
- a deadline (the pool's `socket_timeout`) bounds the round trip; a batch that misses it raises
  `TimeoutError` and the connection is dropped, since Redis is not answering it;
- a batch cancelled mid-flight leaves nothing behind: its replies are read and dropped.
Blocking commands (BLPOP, XREAD BLOCK…) would hold up every batch behind them: never queue one.

Not multiplexed: TLS (`rediss://`) connections; those batches use the pool as before.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any, cast

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio.connection import AbstractConnection, Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)


def pack_commands(commands: Sequence[Sequence[Any]]) -> bytes:
    """Commands in the Redis protocol (RESP arrays of bulk strings), byte for byte as redis-py's
    `Connection.pack_commands` writes them, by hiredis' C packer (redis-py's own per-argument
    encoder and a Python loop both showed under py-spy: docs/performance.md)."""
    try:
        return b"".join([hiredis.pack_command(tuple(args)) for args in commands])
    except TypeError as exc:  # bool, None, containers: nothing Redis can hold
        raise DataError(f"Invalid input for a Redis command: {exc}") from None


_NO_DEADLINE = float("inf")


class _Waiter:
    """One batch in flight: how many replies it expects and those read so far."""

    __slots__ = ("deadline", "expected", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], expected: int, deadline: float) -> None:
        self.future = future
        self.expected = expected
        self.deadline = deadline  # loop time; inf without a timeout
        self.replies: list[Any] = []


class _Link(asyncio.Protocol):
    """One connection: writes batches, matches replies to them in order.

    Deadlines: every batch gets `timeout` seconds, and replies come in the order batches were
    sent, so the oldest batch in flight is always the first to run out of time. One timer, set for
    that batch's deadline, watches them all: when it fires and that batch is still unanswered, the
    batch fails with `TimeoutError` and the connection is dropped (Redis is not answering); if it
    was answered meanwhile, the timer is set again for the batch now oldest. Under load it fires
    about once per `timeout`, where a timer per batch (`asyncio.timeout`) showed in profiles (docs/performance.md).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float | None = None) -> None:
        self._loop = loop
        self._timeout = timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
        self._waiting: collections.deque[_Waiter] = collections.deque()
        self._out: list[bytes] = []  # batches to send together at the end of this loop turn
        self._transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    # ---- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        try:
            while (reply := self._reader.gets()) is not False:
                if not waiting:
                    raise InvalidResponse("a reply nobody asked for")
                waiter = waiting[0]
                waiter.replies.append(reply)
                if len(waiter.replies) == waiter.expected:
                    waiting.popleft()
                    if not waiter.future.done():  # else cancelled or timed out: replies dropped
                        waiter.future.set_result(waiter.replies)
        except InvalidResponse as exc:
            self.close(RedisConnectionError(f"Protocol error from Redis: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:  # not dropped on purpose (close()): Redis went away or restarted
            log.warning("redis_shared_connection_lost", in_flight=len(self._waiting), error=repr(exc))
        self._fail(RedisConnectionError(f"Connection to Redis lost: {exc}" if exc else "Redis closed the connection"))

    # ---- used by Multiplexer ------------------------------------------------------------------

    def send(self, data: bytes, expected: int) -> asyncio.Future[list[Any]]:
        """Write one batch; the future gets its `expected` replies."""
        if self.lost is not None:
            raise self.lost
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        busy = bool(self._waiting)
        deadline = _NO_DEADLINE if self._timeout is None else self._loop.time() + self._timeout
        self._waiting.append(_Waiter(future, expected, deadline))
        if self._watchdog is None and self._timeout is not None:
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)
        if self._out:
            self._out.append(data)
        elif busy:
            # Other batches are waiting for replies, so requests are arriving together: this one
            # waits for the end of the loop turn and leaves in one write with the others queued
            # meanwhile (uvloop sends every write() at once, a system call each).
            self._out.append(data)
            self._loop.call_soon(self._flush)
        else:
            # Nothing in flight: send now, a later write would only add latency.
            assert self._transport is not None
            self._transport.write(data)
        return future

    def close(self, why: BaseException) -> None:
        """Drop the connection: every batch waiting on it fails with `why`."""
        self._fail(why)
        if self._transport is not None:
            self._transport.abort()

    def _flush(self) -> None:
        if self._out and self.lost is None and self._transport is not None:
            # One joined buffer: uvloop's writelines() of several costs more than the copy
            # (callgrind; docs/performance.md).
            self._transport.write(b"".join(self._out))
        self._out = []

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting or self.lost is not None:
            return
        oldest = self._waiting[0]
        if oldest.deadline > self._loop.time():  # answered meanwhile: watch the one now oldest
            self._watchdog = self._loop.call_at(oldest.deadline, self._check_deadline)
            return
        if not oldest.future.done():
            oldest.future.set_exception(RedisTimeoutError("Timeout talking to Redis"))
        # The batches behind it would wait on the same silence: they fail as on a lost connection
        # (and are tried once more on a new one).
        self.close(RedisConnectionError("Redis did not answer in time"))

    def _fail(self, why: BaseException) -> None:
        if self.lost is None:
            self.lost = why
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._out = []
        while self._waiting:
            future = self._waiting.popleft().future
            if not future.done():
                future.set_exception(why)


class Multiplexer:
    """Runs batches of commands on one shared connection, reconnecting after it is lost."""

    def __init__(self, connection: AbstractConnection) -> None:
        # A connection object of the pool's class and settings, used only as the address book.
        self._template = connection
        self._timeout: float | None = connection.socket_timeout
        self._link: _Link | None = None
        self._connecting: asyncio.Future[_Link] | None = None

    @staticmethod
    def supports(connection: AbstractConnection) -> bool:
        return type(connection) in (Connection, UnixDomainSocketConnection)

    async def execute(self, data: bytes, expected: int) -> list[Any]:
        """The replies to `expected` commands packed as `data`, in order. One retry on a lost
        connection (after a Redis restart the shared one is dead)."""
        try:
            return await self._round_trip(data, expected)
        except RedisConnectionError:
            return await self._round_trip(data, expected)

    async def _round_trip(self, data: bytes, expected: int) -> list[Any]:
        # Connecting has its own deadline (_connect); the link bounds the round trip.
        replies = await (await self._connected()).send(data, expected)
        for reply in replies:
            if isinstance(reply, RedisConnectionError):  # LOADING, NOAUTH…: as a pooled read raises it
                raise reply
        return replies

    async def _connected(self) -> _Link:
        link = self._link
        if link is not None and link.lost is None:
            return link
        if self._connecting is None:
            # One connect for every batch that finds the link down; its own task, so a batch
            # cancelled while waiting does not cancel the connect the others wait for.
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected_or_not)
        return await asyncio.shield(self._connecting)

    def _connected_or_not(self, connecting: asyncio.Future[_Link]) -> None:
        self._connecting = None
        if not connecting.cancelled() and connecting.exception() is None:
            self._link = connecting.result()

    async def _connect(self) -> _Link:
        loop = asyncio.get_running_loop()
        conn = self._template
        timeout = conn.socket_connect_timeout or self._timeout
        link = _Link(loop, self._timeout)
        try:
            async with asyncio.timeout(timeout):
                if isinstance(conn, UnixDomainSocketConnection):
                    await loop.create_unix_connection(lambda: link, conn.path)
                else:
                    assert isinstance(conn, Connection)
                    await loop.create_connection(lambda: link, conn.host, conn.port)
                await self._handshake(link)
        except BaseException as exc:
            link.close(RedisConnectionError("not connected"))
            if isinstance(exc, TimeoutError):
                raise RedisTimeoutError("Timeout connecting to Redis") from None
            if isinstance(exc, OSError):
                raise RedisConnectionError(f"Error connecting to Redis: {exc}") from exc
            raise
        return link

    async def _handshake(self, link: _Link) -> None:
        conn = self._template
        commands: list[tuple[Any, ...]] = []
        if conn.password is not None:
            auth = (conn.username, conn.password) if conn.username else (conn.password,)
            commands.append(("AUTH", *auth))
        if conn.db:
            commands.append(("SELECT", conn.db))
        if not commands:
            return
        for reply in await link.send(pack_commands(commands), len(commands)):
            if isinstance(reply, Exception):
                raise reply

    def close(self) -> None:
        if self._link is not None:
            self._link.close(RedisConnectionError("the gateway closed its Redis connection"))
            self._link = None
