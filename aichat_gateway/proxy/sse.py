"""Incremental, sans-I/O Server-Sent-Events parsing for relaying upstream streams.

The relay forwards upstream bytes untouched and feeds a copy to `SSEParser` only to learn the
usage, so the parser must be cheap and must never depend on how the network cut the stream. It
follows the WHATWG "event stream interpretation" rules: lines end in CRLF, LF or CR; a leading BOM
is dropped; `:` starts a comment; `data` lines join with "\\n"; a blank line dispatches; an event
with no data is not dispatched; the last event id persists across events; an unfinished event at
the end of the stream is discarded.

Speed: each fed chunk is scanned with bytes methods (`in`, `replace`, `split`), never byte by byte
in Python, and an unfinished line is kept as a list of pieces so a long line arriving in many small
chunks costs linear, not quadratic, time. Memory is bounded by `max_line_bytes`.

The helpers below (`usage_from_event`, `is_done`, `content_text_of_chunk`) read OpenAI chunk JSON
and never raise: a malformed upstream chunk must not break a buyer's stream or its settlement.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
DONE_DATA = "[DONE]"

_BOM = b"\xef\xbb\xbf"
_LF = b"\n"
_CR = b"\r"
_DATA = b"data: "
_EVENT_END = b"\n\n"
_NEXT_DATA_EVENT = _EVENT_END + _DATA  # between two `data: ` events of a chunk
_NEXT_DATA_EVENT_TEXT = _NEXT_DATA_EVENT.decode()
_COLON = 0x3A  # ord(":"), compared against an indexed byte
DEFAULT_EVENT_TYPE = "message"  # the type of an event without an `event` line


class SSEError(ValueError):
    """The stream broke a limit of the parser (a line too long); the stream should be aborted."""


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event. `event` defaults to "message"; `id` is None until a stream sets one."""

    event: str
    data: str
    id: str | None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage reported by the upstream in a chunk's `usage` object."""

    prompt_tokens: int
    completion_tokens: int


class SSEParser:
    """Turns arbitrary byte chunks of an event stream into complete events.

    One parser per stream; not shared between tasks. After an `SSEError` the parser's state is
    unspecified and the stream should be abandoned.
    """

    __slots__ = (
        "_at_start",
        "_bom_prefix",
        "_data",
        "_event_type",
        "_last_id",
        "_max_line",
        "_pending",
        "_pending_len",
        "_retry_ms",
        "_skip_lf",
    )

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be positive")
        self._max_line = max_line_bytes
        self._at_start = True  # the BOM may only be stripped at the very start
        self._bom_prefix = b""  # the first bytes while they could still be a split BOM
        self._skip_lf = False  # the last chunk ended in CR: a leading LF completes that CRLF
        self._pending: list[bytes] = []  # pieces of the unfinished line, joined once it ends
        self._pending_len = 0
        self._data: list[bytes] = []  # the event's data lines
        self._event_type = b""
        self._last_id: str | None = None
        self._retry_ms: int | None = None

    @property
    def last_event_id(self) -> str | None:
        """The last `id` seen (the value a client would resend as Last-Event-ID)."""
        return self._last_id

    @property
    def retry_ms(self) -> int | None:
        """The last valid `retry` value in milliseconds, if the stream sent one."""
        return self._retry_ms

    @property
    def idle(self) -> bool:
        """True between events: nothing of a half-received line or event is buffered."""
        return not (self._pending or self._data or self._event_type or self._skip_lf or self._bom_prefix)

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Consume one chunk and return the events it completed (often none, often one)."""
        if self._at_start:
            data = self._strip_bom(data)
        if not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == 0x0A:
                data = data[1:]
                if not data:
                    return []
        if _CR in data:
            # Normalise CRLF and lone CR to LF. A trailing CR already ends its line; remember it so a
            # LF at the start of the next chunk is not taken for a second, blank line.
            self._skip_lf = data.endswith(_CR)
            data = data.replace(b"\r\n", _LF).replace(_CR, _LF)
        if _LF not in data:
            self._append_pending(data)
            return []

        lines = data.split(_LF)
        rest = lines.pop()
        if self._pending:
            self._pending.append(lines[0])
            lines[0] = b"".join(self._pending)
            self._pending.clear()
            self._pending_len = 0
        if max(map(len, lines)) > self._max_line:
            raise SSEError(f"SSE line longer than {self._max_line} bytes")
        if rest:
            self._append_pending(rest)

        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                event = self._dispatch()
                if event is not None:
                    events.append(event)
            elif line[0] != _COLON:
                self._field(line)
        return events

    def feed_data_events(self, data: bytes) -> list[str] | None:
        """The data of each event in `data` when it is nothing but whole one-line `data: ` events
        and the parser is between events; else None, with the parser untouched (use `feed`).

        The common shape of a provider's chunk, recognised with a few bytes methods over the whole
        chunk and decoded once, instead of line by line. Each value is the data of the event `feed`
        would have dispatched, whose type is `DEFAULT_EVENT_TYPE` and whose id is unchanged
        (`last_event_id`), as no `id` line is among them.
        """
        if not data.endswith(_EVENT_END) or _CR in data or len(data) > self._max_line or not self.idle:
            return None
        events = data.count(_EVENT_END)
        # Every line starts with "data: ", and the only LFs are the blank lines between events.
        if not data.startswith(_DATA) or data.count(_LF) != 2 * events:
            return None
        if events > 1 and data.count(_NEXT_DATA_EVENT) != events - 1:
            return None
        self._at_start = False  # the chunk starts with "data: ": there was no BOM to strip
        # UTF-8 decoding with replacement ends at every ASCII byte, so decoding the whole chunk
        # gives each event the data that decoding it alone would.
        return data[len(_DATA) : -len(_EVENT_END)].decode("utf-8", "replace").split(_NEXT_DATA_EVENT_TEXT)

    def _strip_bom(self, data: bytes) -> bytes:
        head = self._bom_prefix + data
        if len(head) < len(_BOM) and _BOM.startswith(head):
            self._bom_prefix = head  # maybe a BOM split across chunks: wait for more
            return b""
        self._at_start = False
        self._bom_prefix = b""
        return head[len(_BOM) :] if head.startswith(_BOM) else head

    def _append_pending(self, piece: bytes) -> None:
        self._pending_len += len(piece)
        if self._pending_len > self._max_line:
            raise SSEError(f"SSE line longer than {self._max_line} bytes")
        self._pending.append(piece)

    def _field(self, line: bytes) -> None:
        name, colon, value = line.partition(b":")
        if colon and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event_type = value
        elif name == b"id":
            if b"\x00" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value and value.isdigit():  # bytes.isdigit is ASCII-only, as the spec requires
                self._retry_ms = int(value)

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event_type = b""
            return None
        data = b"\n".join(self._data).decode("utf-8", "replace")
        event_type = self._event_type.decode("utf-8", "replace") if self._event_type else DEFAULT_EVENT_TYPE
        self._data = []
        self._event_type = b""
        # Positional: a frozen dataclass's keyword call costs more, on every streamed chunk.
        return SSEEvent(event_type, data, self._last_id)


def is_done(event: SSEEvent) -> bool:
    """True for OpenAI's end-of-stream sentinel `data: [DONE]`."""
    return event.data.strip() == DONE_DATA


def _chunk_json(event: SSEEvent) -> dict[str, object] | None:
    data = event.data
    if not data.lstrip().startswith("{"):  # cheap reject of [DONE], keep-alives and junk
        return None
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _token_count(value: object) -> int | None:
    # bool is an int subclass; `true` is not a token count.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def may_carry_usage(data: str) -> bool:
    """False when the chunk data surely reports no usage: no `"usage"` key, or only `"usage":null`
    (with include_usage every content chunk carries that): no need to parse it."""
    if '"usage"' not in data:
        return False
    return not (('"usage":null' in data or '"usage": null' in data) and data.count('"usage"') == 1)


def usage_from_event(event: SSEEvent) -> Usage | None:
    """The chunk's usage when it carries a non-null `usage` with both token counts, else None.

    With `stream_options.include_usage` OpenAI sends usage once, in a final chunk whose `choices`
    is empty; other chunks carry `"usage": null`. The substring test skips parsing the many
    content chunks that cannot hold usage (JSON string escaping means a quoted `"usage"` key cannot
    appear inside message text, so the quick checks below cannot be fooled by content).
    """
    data = event.data
    if not may_carry_usage(data):
        return None
    chunk = _chunk_json(event)
    if chunk is None:
        return None
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = _token_count(usage.get("prompt_tokens"))
    completion = _token_count(usage.get("completion_tokens"))
    if prompt is None or completion is None:
        return None
    return Usage(prompt_tokens=prompt, completion_tokens=completion)


def _delta_texts(delta: dict[str, object], out: list[str]) -> None:
    # reasoning_content is DeepSeek's reasoning text: billed as output, so it must be counted.
    for key in ("content", "reasoning_content", "refusal"):
        text = delta.get(key)
        if isinstance(text, str):
            out.append(text)
    calls = delta.get("tool_calls")
    functions: list[object] = list(calls) if isinstance(calls, list) else []
    legacy = delta.get("function_call")
    if legacy is not None:
        functions.append({"function": legacy})
    for call in functions:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                text = function.get(key)
                if isinstance(text, str):
                    out.append(text)


_CONTENT_KEY = '"content":"'


def may_carry_other_text(data: str) -> bool:
    """True when chunk data (one chunk's, or several chunks' at once) has a field other than
    `content` that carries text, or an escape: such a chunk is read by the JSON path. Spelled out,
    not a generator over a tuple of markers nor a regex (both dearer: docs/performance.md)."""
    return (
        '"tool_calls"' in data
        or '"reasoning_content"' in data
        or '"refusal":"' in data
        or '"function_call"' in data
        or '"text":' in data
        or "\\" in data
    )


def plain_content(data: str, screened: bool = False) -> str | None:
    """The common chunk, read without parsing: exactly one `"content":"..."` with no escapes and
    nothing else that carries text. None means "not that simple": use the JSON path. `screened`:
    the caller found `may_carry_other_text` False for a text holding this chunk's data."""
    start = data.find(_CONTENT_KEY)
    if start < 0 or data.find(_CONTENT_KEY, start + 1) >= 0 or not data.startswith("{"):
        return None
    if not screened and may_carry_other_text(data):
        return None
    start += len(_CONTENT_KEY)
    end = data.find('"', start)
    return data[start:end] if end >= 0 else None


def content_text_of_chunk(event: SSEEvent) -> str:
    """The generated text in one chunk (content, reasoning, tool names and arguments), for counting.

    Used only when the upstream sends no usage: the relay sums the tokens of these texts to charge
    what was delivered. Returns "" for anything that is not a well-formed chunk; never raises.
    Called for every relayed chunk, so the plain case skips the JSON parse (a property test checks
    both paths agree).
    """
    plain = plain_content(event.data)
    if plain is not None:
        return plain
    chunk = _chunk_json(event)
    if chunk is None:
        return ""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return ""
    out: list[str] = []
    for choice in choices:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            _delta_texts(delta, out)
        text = choice.get("text")  # legacy /v1/completions streams
        if isinstance(text, str):
            out.append(text)
    return "".join(out)
