"""proxy/writes.py: a response head leaves with the first body bytes, in one system call."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aichat_gateway.proxy.writes import HeadHoldingTransport

pytestmark = pytest.mark.timeout(5)

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n"


class RecordingTransport:
    """The socket side: one entry per call that would be a system call."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def writelines(self, data: list[bytes]) -> None:
        self.sent.append(b"".join(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.sent.append(b"<close>")

    def abort(self) -> None:
        self.closing = True
        self.sent.append(b"<abort>")

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_write_buffer_limits(self, high: int) -> Any:
        return ("limits", high)


async def next_turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
def sock() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
async def transport(sock: RecordingTransport) -> HeadHoldingTransport:
    return HeadHoldingTransport(sock, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_a_head_and_its_body_leave_in_one_call(sock: RecordingTransport, transport: HeadHoldingTransport) -> None:
    transport.write(HEAD)
    assert sock.sent == []
    transport.write(b"body")
    assert sock.sent == [HEAD + b"body"]  # at once, not at the end of the turn


async def test_a_head_whose_body_does_not_follow_leaves_at_the_end_of_the_turn(
    sock: RecordingTransport, transport: HeadHoldingTransport
) -> None:
    transport.write(HEAD)
    await next_turn()
    assert sock.sent == [HEAD]
    transport.write(b"data: 1\n\n")
    assert sock.sent == [HEAD, b"data: 1\n\n"]


async def test_body_bytes_are_never_held(sock: RecordingTransport, transport: HeadHoldingTransport) -> None:
    transport.write(b"5\r\nhello\r\n")
    assert sock.sent == [b"5\r\nhello\r\n"]


async def test_close_sends_a_held_head_before_closing(
    sock: RecordingTransport, transport: HeadHoldingTransport
) -> None:
    transport.write(HEAD)
    transport.close()
    await next_turn()
    assert sock.sent == [HEAD, b"<close>"]


async def test_abort_drops_a_held_head(sock: RecordingTransport, transport: HeadHoldingTransport) -> None:
    transport.write(HEAD)
    transport.abort()
    await next_turn()
    assert sock.sent == [b"<abort>"]


async def test_a_head_is_not_written_to_a_connection_already_closing(
    sock: RecordingTransport, transport: HeadHoldingTransport
) -> None:
    transport.write(HEAD)
    sock.closing = True  # the buyer went away within the turn
    await next_turn()
    assert sock.sent == []


async def test_the_rest_of_the_transport_api_is_the_real_ones(transport: HeadHoldingTransport) -> None:
    assert transport.get_extra_info("peername") == "extra:peername"
    assert transport.is_closing() is False
    assert transport.set_write_buffer_limits(high=10) == ("limits", 10)
