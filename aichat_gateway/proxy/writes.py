"""One system call per response instead of two: uvicorn's HTTP protocol over a transport that
sends a response's head together with its first body bytes.

uvicorn writes a response's head as soon as the app sends `http.response.start`, then its body,
and uvloop (0.23) sends each `write()` at once: two `send()` calls per answer, and on loopback a
send also does the receiver's TCP work. The app sends the body right after the head (Starlette's
responses; the relay, whose first chunk is already read), so the head waits for it, or for the end
of the event-loop turn if it does not come: nothing waits longer than that turn, nothing else is
held back.

Plugged in through uvicorn's documented extension point: `uvicorn.run(http=<protocol class>)`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# uvicorn starts every response head with its status line.
_HEAD = b"HTTP/1.1 "


class HeadHoldingTransport:
    """A transport that holds a response head until the next write or the end of the loop turn;
    everything else is the real transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None
        # What uvicorn calls per request, bound here so a call is a plain attribute read (a lookup
        # that falls through to __getattr__ builds an AttributeError first).
        self.is_closing = transport.is_closing
        self.get_extra_info = transport.get_extra_info
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

    def write(self, data: bytes) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._transport.write(head + data)  # not writelines(): dearer in uvloop (docs/performance.md)
        elif data.startswith(_HEAD):
            self._head = data
            self._loop.call_soon(self.release)
        else:
            self._transport.write(data)

    def release(self) -> None:
        """Send a head still held (its body did not follow in the same turn)."""
        if self._head is not None:
            head, self._head = self._head, None
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.release()  # written before close(): sent before the FIN, as before
        self._transport.close()

    def abort(self) -> None:
        self._head = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:  # the rest of the transport API, rarely used
        return getattr(self._transport, name)


class HeadHoldingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(HeadHoldingTransport(transport, self.loop))  # type: ignore[arg-type]
