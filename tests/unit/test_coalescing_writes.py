"""proxy/writes.py: what uvicorn writes in one event-loop turn leaves in one system call, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aichat_gateway.proxy.writes import CoalescingTransport

pytestmark = pytest.mark.timeout(5)


class RecordingTransport:
    """The socket side: records each call that would be a system call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def writelines(self, data: list[bytes]) -> None:
        self.calls.append(("writelines", b"".join(data)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.closing = True
        self.calls.append(("abort", None))

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


async def next_turn() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@pytest.fixture
def sock() -> RecordingTransport:
    return RecordingTransport()


async def test_a_head_and_body_written_in_one_turn_leave_in_one_call(sock: RecordingTransport) -> None:
    transport = CoalescingTransport(sock, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"body")
    assert sock.calls == []  # nothing before the turn ends
    await next_turn()
    assert sock.calls == [("writelines", b"HTTP/1.1 200 OK\r\n\r\nbody")]


async def test_writes_in_different_turns_leave_separately_in_order(sock: RecordingTransport) -> None:
    transport = CoalescingTransport(sock, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"a")
    await next_turn()
    transport.write(b"b")
    await next_turn()
    assert sock.calls == [("writelines", b"a"), ("writelines", b"b")]


async def test_close_sends_what_was_written_before_it(sock: RecordingTransport) -> None:
    transport = CoalescingTransport(sock, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.close()
    await next_turn()
    assert sock.calls == [("writelines", b"last words"), ("close", None)]


async def test_abort_drops_what_was_not_sent_yet(sock: RecordingTransport) -> None:
    transport = CoalescingTransport(sock, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"never")
    transport.abort()
    await next_turn()
    assert sock.calls == [("abort", None)]


async def test_nothing_is_written_to_a_transport_already_closing(sock: RecordingTransport) -> None:
    transport = CoalescingTransport(sock, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"too late")
    sock.closing = True  # the buyer went away within the turn
    await next_turn()
    assert sock.calls == []


async def test_everything_else_is_the_real_transports(sock: RecordingTransport) -> None:
    transport = CoalescingTransport(sock, asyncio.get_running_loop())  # type: ignore[arg-type]
    assert transport.get_extra_info("peername") == "extra:peername"
    assert transport.is_closing() is False
