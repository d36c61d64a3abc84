"""redismux's connection: when a batch is written, and how replies find their batch."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aichat_gateway.redismux import _Link, pack_commands

pytestmark = pytest.mark.timeout(5)


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.sent.append(b"".join(data))

    def abort(self) -> None:
        self.sent.append(b"<abort>")


class SteppedLoop:
    """The running loop, but with a clock the test moves and timers the test fires."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.now = 100.0
        self.timers: list[tuple[float, Callable[[], None], asyncio.TimerHandle]] = []

    def time(self) -> float:
        return self.now

    def create_future(self) -> asyncio.Future[Any]:
        return self._loop.create_future()

    def call_soon(self, callback: Callable[[], None]) -> asyncio.Handle:
        return self._loop.call_soon(callback)

    def call_at(self, when: float, callback: Callable[[], None]) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, (), self._loop)
        self.timers.append((when, callback, handle))
        return handle

    def fire_timers(self) -> None:
        """Run, once, the timers set so far that are due and not cancelled."""
        due, self.timers = [t for t in self.timers if t[0] <= self.now], [t for t in self.timers if t[0] > self.now]
        for _, callback, handle in due:
            if not handle.cancelled():
                callback()


def link_with(sock: RecordingTransport, loop: Any = None, timeout: float | None = None) -> _Link:
    link = _Link(loop or asyncio.get_running_loop(), timeout)
    link.connection_made(sock)  # type: ignore[arg-type]
    return link


PING, ECHO, GET = pack_commands([("PING",)]), pack_commands([("ECHO", "x")]), pack_commands([("GET", "k")])


async def test_a_batch_sent_with_nothing_in_flight_is_written_at_once() -> None:
    sock = RecordingTransport()
    link_with(sock).send(PING, 1)
    assert sock.sent == [PING]


async def test_batches_sent_while_others_wait_leave_together_at_the_end_of_the_turn() -> None:
    sock = RecordingTransport()
    link = link_with(sock)
    link.send(PING, 1)
    link.send(ECHO, 1)
    link.send(GET, 1)
    assert sock.sent == [PING]
    await asyncio.sleep(0)
    assert sock.sent == [PING, ECHO + GET]


async def test_replies_are_handed_to_batches_in_the_order_they_were_sent() -> None:
    link = link_with(RecordingTransport())
    first, second = link.send(PING, 1), link.send(pack_commands([("INCR", "a"), ("INCR", "b")]), 2)
    link.data_received(b"+PONG\r\n:1")  # a reply split across reads
    assert first.result() == [b"PONG"]
    assert not second.done()
    link.data_received(b"\r\n:7\r\n")
    assert second.result() == [1, 7]


async def test_a_cancelled_batchs_replies_are_dropped() -> None:
    link = link_with(RecordingTransport())
    abandoned, kept = link.send(PING, 1), link.send(ECHO, 1)
    abandoned.cancel()
    link.data_received(b"+PONG\r\n$1\r\nx\r\n")
    assert kept.result() == [b"x"]


async def test_a_lost_connection_fails_every_waiting_batch_and_drops_unsent_ones() -> None:
    sock = RecordingTransport()
    link = link_with(sock)
    sent, queued = link.send(PING, 1), link.send(ECHO, 1)
    link.connection_lost(ConnectionResetError("reset"))
    await asyncio.sleep(0)
    assert sock.sent == [PING]  # the queued batch never went out on the dead connection
    for future in (sent, queued):
        with pytest.raises(RedisConnectionError):
            future.result()
    with pytest.raises(RedisConnectionError):
        link.send(GET, 1)


async def test_a_reply_nobody_asked_for_drops_the_connection() -> None:
    sock = RecordingTransport()
    link = link_with(sock)
    link.data_received(b"+SURPRISE\r\n")
    assert sock.sent == [b"<abort>"]
    assert isinstance(link.lost, RedisConnectionError)


Batch = asyncio.Future[list[Any]]


def two_batches_a_second_apart() -> tuple[SteppedLoop, RecordingTransport, _Link, Batch, Batch]:
    """A link with a 5 s timeout on a stepped clock; PING sent at 100.0, ECHO at 101.0."""
    loop, sock = SteppedLoop(), RecordingTransport()
    link = link_with(sock, loop, timeout=5.0)
    first = link.send(PING, 1)
    loop.now += 1.0
    return loop, sock, link, first, link.send(ECHO, 1)


async def test_the_oldest_batch_unanswered_at_its_deadline_times_out_and_the_others_fail_over() -> None:
    loop, sock, _, oldest, newer = two_batches_a_second_apart()
    loop.now += 4.0
    loop.fire_timers()
    with pytest.raises(RedisTimeoutError):
        oldest.result()
    with pytest.raises(RedisConnectionError):  # tried once more on a new connection (Multiplexer)
        newer.result()
    assert sock.sent[-1] == b"<abort>"


async def test_a_batch_answered_in_time_moves_the_deadline_to_the_next_oldest() -> None:
    loop, _, link, first, second = two_batches_a_second_apart()
    link.data_received(b"+PONG\r\n")
    loop.now += 4.0  # the first's deadline: the second has one second left
    loop.fire_timers()
    assert first.result() == [b"PONG"] and not second.done() and link.lost is None
    assert [when for when, _, _ in loop.timers] == [106.0]  # one timer, for the second's deadline
    link.data_received(b"$1\r\nx\r\n")
    assert second.result() == [b"x"]


async def test_one_timer_watches_every_batch_in_flight() -> None:
    loop = SteppedLoop()
    link = link_with(RecordingTransport(), loop, timeout=5.0)
    for _ in range(10):
        link.send(PING, 1)
    assert len(loop.timers) == 1


async def test_without_a_timeout_no_timer_is_set() -> None:
    loop = SteppedLoop()
    link_with(RecordingTransport(), loop).send(PING, 1)
    assert loop.timers == []


async def test_a_lost_connection_stops_its_timer() -> None:
    loop = SteppedLoop()
    link = link_with(RecordingTransport(), loop, timeout=5.0)
    link.send(PING, 1)
    link.connection_lost(None)
    assert loop.timers[0][2].cancelled()
