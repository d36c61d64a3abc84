"""redismux's connection: when a batch is written, and how replies find their batch."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

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


def link_with(sock: RecordingTransport) -> _Link:
    link = _Link(asyncio.get_running_loop())
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
