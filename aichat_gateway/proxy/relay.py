"""Relaying a provider's SSE stream to the buyer.

`StreamMeter` is the sans-I/O part: fed raw upstream bytes, it returns the bytes to forward,
picks out the usage chunk (forwarded only if the buyer asked for it) and keeps the delivered text
for counting when the provider sends no usage. `RelayStream` is the thin I/O shell: it sends
chunks as they arrive, watches for the client going away (and then closes the upstream request at
once), and always runs its completion callback exactly once, shielded from cancellation.

A stream is complete only when the provider ended its answer (`saw_done`: OpenAI's `[DONE]`,
Anthropic's `message_stop`); its last bytes then go out with the end of the buyer's body, and the
provider's body is drained so that its connection can be reused. One that breaks, stalls or just
stops before that ends with an error event and outcome `upstream_error`. "Stalls" covers a
provider trickling bytes: each read then stays under the read timeout, so the relay also ends a
stream that forwarded nothing for `stall_after` seconds (the read timeout) while bytes kept coming.

A buyer who leaves mid-stream does not end the provider's work at once: the provider bills what it
generates, and its usage comes last (after `finish_reason`, with reasoning tokens the buyer never
saw). So the relay stops sending and reads on for the usage alone, bounded by `UsageDrain`: it
stops at the usage or the end of the answer, after `max_bytes` more bytes, or `seconds` after the
buyer left (the watch's grace, which then cancels the read), and the provider's request is closed.
The charge is the provider's usage when it came, else the text read so far, counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from aichat_gateway.config.logging import MIN_EXACT_SECRET, REDACTED
from aichat_gateway.proxy.errors import ClientDisconnected
from aichat_gateway.proxy.outcome import Outcome
from aichat_gateway.proxy.receipts import add_cost

if TYPE_CHECKING:  # adapters import this module; the protocol is needed for types only
    from aichat_gateway.proxy.adapters.base import StreamTranslator
from aichat_gateway.proxy.sse import (
    DEFAULT_EVENT_TYPE,
    SSEError,
    SSEEvent,
    SSEParser,
    Usage,
    content_text_of_chunk,
    is_done,
    may_carry_other_text,
    may_carry_usage,
    plain_content,
    usage_from_event,
)

# (prompt tokens, completion tokens) -> the answer's cost in USD, for `usage.cost`.
CostOf = Callable[[int, int], str]
_REDACTED = REDACTED.encode()


class StreamMeter:
    def __init__(self, forward_usage: bool, cost_of: CostOf | None = None) -> None:
        self._parser = SSEParser()
        self._forward_usage = forward_usage
        self._cost_of = cost_of
        self.usage: Usage | None = None
        self.text_parts: list[str] = []
        self.saw_done = False
        self.error: str | None = None  # OpenAI-compatible streams are relayed as they are: never set

    def feed(self, data: bytes) -> bytes:
        """Observe upstream bytes; return what the buyer should receive for them."""
        values = self._parser.feed_data_events(data)
        if values is not None:
            return self._feed_data_events(data, values)
        started_idle = self._parser.idle
        out: list[SSEEvent | None] = []
        untouched = True
        for event in self._parser.feed(
            data
        ):  # a plain loop: cheaper than the generator it replaced (docs/performance.md)
            observed = self._observe(event)
            out.append(observed)
            untouched = untouched and observed is event
        whole = started_idle and self._parser.idle
        # Raw bytes may go out mid-event only when no later part of that event can be changed:
        # the usage chunk is withheld (no usage wanted) or priced (cost_of), so only then whole events.
        if untouched and (whole or (self._forward_usage and self._cost_of is None)):
            return data  # nothing withheld or changed: the provider's bytes as they are
        return b"".join(_encode(event) for event in out if event is not None)

    def _feed_data_events(self, data: bytes, values: list[str]) -> bytes:
        """`feed` for the common chunk: whole one-line `data:` events, nothing else. The same result
        as the general path (a property test holds them together) at two thirds of its cost: a
        plain content chunk that cannot carry usage is counted without building its event, and the
        markers of other text are looked for once in the whole chunk."""
        screened = not may_carry_other_text("\n".join(values))  # no marker holds a newline
        out: list[bytes] | None = None  # set once an event is withheld or changed
        for i, value in enumerate(values):
            if screened and not may_carry_usage(value):
                text = plain_content(value, screened=True)
                if text is not None:
                    if text:
                        self.text_parts.append(text)
                    if out is not None:
                        out.append(_encode_data(value))
                    continue
            event = SSEEvent(DEFAULT_EVENT_TYPE, value, self._parser.last_event_id)
            observed = self._observe(event)
            if observed is not event and out is None:
                out = [_encode_data(earlier) for earlier in values[:i]]
            if out is not None and observed is not None:
                out.append(_encode(observed))
        return data if out is None else b"".join(out)

    def _observe(self, event: SSEEvent) -> SSEEvent | None:
        """Record what the event tells us; None for a usage-only chunk to be withheld, a changed
        event for the usage chunk the buyer gets (with its cost)."""
        if is_done(event):
            self.saw_done = True
            return event
        if '"usage"' in event.data:
            usage = usage_from_event(event)
            if usage is not None:
                self.usage = usage
                if _has_no_choices(event.data):
                    if not self._forward_usage:
                        return None
                    if self._cost_of is not None:
                        cost = self._cost_of(usage.prompt_tokens, usage.completion_tokens)
                        data = add_cost(event.data.encode(), cost).decode()
                        return SSEEvent(event.event, data, event.id)
                    return event
        text = content_text_of_chunk(event)
        if text:
            self.text_parts.append(text)
        return event


def _has_no_choices(data: str) -> bool:
    try:
        choices = orjson.loads(data).get("choices")
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return not choices


def _encode(event: SSEEvent) -> bytes:
    head = f"event: {event.event}\n" if event.event and event.event != DEFAULT_EVENT_TYPE else ""
    lines = "".join(f"data: {line}\n" for line in event.data.split("\n"))
    return (head + lines + "\n").encode()


def _encode_data(data: str) -> bytes:
    """`_encode` of a default-type event whose data is one line."""
    return b"data: " + data.encode() + b"\n\n"


class _Stalled(Exception):
    """Bytes kept coming but nothing could be forwarded for `stall_after` seconds."""


_CUT_MESSAGES: dict[type[Exception], str] = {
    SSEError: "The upstream sent a malformed stream; the answer is incomplete.",
    _Stalled: "The upstream stream stalled mid-way; the answer is incomplete.",
}
_FAILED_MESSAGE = "The upstream stream failed mid-way; the answer is incomplete."
_UNFINISHED_MESSAGE = "The upstream stream ended before the answer was complete."


def error_event(message: str, code: str) -> bytes:
    """How a failure after the first byte reaches the buyer: one last SSE event, then the end."""
    payload = {"error": {"message": message, "type": "api_error", "param": None, "code": code}}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


@dataclass(frozen=True, slots=True)
class UsageDrain:
    """How long, and how far, a stream is read for its usage after the buyer left (0, 0: not at all)."""

    seconds: float = 0.0
    max_bytes: int = 0


class ClientWatch:
    """Notices the buyer going away at any point of a request and cancels the work done for it.

    One task per request waits on `receive()` for `http.disconnect`; whichever step is running
    inside `guard()` (waiting for the provider, relaying its stream) is cancelled, at once or after
    the guard's `grace` seconds, and the guard turns that cancellation into `ClientDisconnected`.
    `gone` tells the guarded step at once, so during a grace it can wind down by itself.
    Cancellations from elsewhere (server shutdown) pass through untouched.
    """

    def __init__(self, receive: Receive) -> None:
        self.gone = False
        self._target: asyncio.Task[Any] | None = None
        self._grace = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._task = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self._target is not None:
            self._cancel_later()

    def _cancel_later(self) -> None:
        if self._grace <= 0:
            self._cancel_target()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._grace, self._cancel_target)

    def _cancel_target(self) -> None:
        if self._target is not None:
            self._target.cancel()

    @contextlib.contextmanager
    def guard(self, grace: float = 0.0) -> Iterator[None]:
        task = asyncio.current_task()
        self._target, self._grace = task, grace
        if self.gone:
            if grace <= 0:
                self._target = None
                raise ClientDisconnected("The client closed the connection.")
            self._cancel_later()
        try:
            yield
        except asyncio.CancelledError:
            if not self.gone or task is None:
                raise
            task.uncancel()
            raise ClientDisconnected("The client closed the connection.") from None
        finally:
            self._target, self._grace = None, 0.0
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def close(self) -> None:
        self._task.cancel()


@dataclass(frozen=True, slots=True)
class StreamResult:
    outcome: Outcome  # OK, CLIENT_DISCONNECTED or UPSTREAM_ERROR
    meter: StreamTranslator
    ttft_seconds: float | None
    finished_at: float


class RelayStream(Response):
    """A streaming response that relays an already-opened upstream stream."""

    def __init__(
        self,
        upstream: httpx.Response,
        first_chunk: bytes,
        chunks: AsyncIterator[bytes],
        meter: StreamTranslator,
        watch: ClientWatch,
        on_done: Callable[[StreamResult], Awaitable[None]],
        headers: Mapping[str, str],
        clock: Callable[[], float] = time.perf_counter,
        *,
        renew: Callable[[], Awaitable[None]] | None = None,
        renew_every: float = 40.0,
        stall_after: float | None = None,
        drain: UsageDrain = UsageDrain(),
        secret: str = "",
    ) -> None:
        # Response.__init__ is skipped on purpose: it would add `content-length: 0` for the empty body.
        self.status_code = 200
        self.media_type = "text/event-stream"
        self.background = None
        self.init_headers(dict(headers))
        self._upstream = upstream
        self._first = first_chunk
        self._chunks = chunks
        self._meter = meter
        self._watch = watch
        self._on_done = on_done
        self._clock = clock
        # A long stream outlives the leases taken for it (the buyer's hold, capacity slots): they
        # are renewed between chunks, checked with one clock read per chunk.
        self._renew = renew
        self._renew_every = renew_every
        self._stall_after = stall_after
        self._drain = drain
        # The route's provider key: a provider quoting it (an error event) must not show it to the buyer.
        self._secret = secret.encode() if len(secret) >= MIN_EXACT_SECRET else b""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        outcome = Outcome.OK
        ttft: float | None = None
        started = self._clock()

        renewed = started
        ended = False  # the buyer has the whole answer

        async def relay() -> None:
            nonlocal outcome, ttft, renewed, ended
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            pending: bytes | None = self._first
            forwarded = started  # when the buyer last got something: the stall check's reference
            cut: str  # why the stream was cut short; set on every path that reaches the error event
            drained = 0  # bytes read after the buyer left
            try:
                while True:
                    if pending is None:
                        pending = await anext(self._chunks, None)
                        if pending is None:
                            break
                    out = self._meter.feed(pending)
                    if self._watch.gone:
                        # Read on for the provider's usage only; nothing more is sent.
                        drained += len(pending)
                        meter = self._meter
                        if meter.usage is not None or meter.saw_done or drained > self._drain.max_bytes:
                            return
                        pending = None
                        continue
                    pending = None
                    if self._secret and self._secret in out:
                        out = out.replace(self._secret, _REDACTED)
                    now = self._clock()
                    if self._meter.saw_done:
                        # The answer is complete: its last bytes and the end of the body leave in one
                        # write, without waiting for the provider to end its body.
                        ended = True  # set first: the server may report the end as a disconnect at once
                        await send({"type": "http.response.body", "body": out, "more_body": False})
                        if ttft is None:
                            ttft = self._clock() - started
                        return
                    if out:
                        await send({"type": "http.response.body", "body": out, "more_body": True})
                        forwarded = now
                        if ttft is None:
                            ttft = self._clock() - started
                    elif self._stall_after is not None and now - forwarded > self._stall_after:
                        raise _Stalled
                    if self._renew is not None and self._clock() - renewed >= self._renew_every:
                        renewed = self._clock()
                        await self._renew()
                cut = _UNFINISHED_MESSAGE
            except (httpx.HTTPError, SSEError, _Stalled) as exc:
                cut = _CUT_MESSAGES.get(type(exc), _FAILED_MESSAGE)
            if self._watch.gone:
                return  # the buyer left first: nobody to tell
            outcome = Outcome.UPSTREAM_ERROR
            if self._meter.error is None:  # else the translator already relayed the provider's error
                failure = error_event(cut, "upstream_error")
                await send({"type": "http.response.body", "body": failure, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        try:
            try:
                with self._watch.guard(grace=self._drain.seconds):
                    await relay()
                if self._watch.gone and not ended:
                    outcome = Outcome.CLIENT_DISCONNECTED  # read for its usage after the buyer left
            except ClientDisconnected:
                # Once the body has ended, the server reports every later receive() as a disconnect.
                outcome = Outcome.OK if ended else Outcome.CLIENT_DISCONNECTED
            except OSError:
                outcome = Outcome.CLIENT_DISCONNECTED  # the send failed: the socket is gone
            self._watch.close()  # now: after the body's end every receive() reports a disconnect
            if ended:
                await _drain(self._chunks)
        finally:
            self._watch.close()
            try:
                await self._upstream.aclose()
            finally:
                await self._on_done(StreamResult(outcome, self._meter, ttft, self._clock()))


_DRAIN_LIMIT = 64 * 1024


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    """Read what the provider still sends after its end-of-answer marker (usually just the end of
    its body), so its connection can be reused; nothing more is relayed. Gives up after
    `_DRAIN_LIMIT` bytes or on a read error: closing the response then closes the connection."""
    read = 0
    with contextlib.suppress(httpx.HTTPError):
        async for chunk in chunks:
            read += len(chunk)
            if read > _DRAIN_LIMIT:
                return
