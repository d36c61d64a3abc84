"""`StreamMeter`'s fast path for chunks of whole one-line `data:` events gives exactly what the
general, line-by-line path gives: the bytes the buyer gets, the usage, the end, the counted text.

The counted text is what a buyer pays for when the provider reports no usage, so the two paths are
held together by a property test over provider-like streams cut at random places.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from aichat_gateway.proxy.relay import CostOf, StreamMeter
from aichat_gateway.proxy.sse import SSEEvent, SSEParser


class GeneralPathOnly(SSEParser):
    __slots__ = ()

    def feed_data_events(self, data: bytes) -> list[str] | None:
        return None


def general_meter(forward_usage: bool, cost_of: CostOf | None) -> StreamMeter:
    meter = StreamMeter(forward_usage, cost_of)
    meter._parser = GeneralPathOnly()  # the same meter with its fast path switched off
    return meter


# Mostly plain words (the fast path's case); now and then anything JSON must escape. The fields
# that make a chunk take the JSON path are rare too: the fast path looks for them chunk-wide.
_WORDS = st.sampled_from(["", "Hello", " world", " naïve ☃", "'quoted'", "a:b,c"])
_TEXT = st.one_of(_WORDS, _WORDS, _WORDS, st.text(st.characters(exclude_categories=["Cs"]), max_size=8))


def rarely(draw: st.DrawFn) -> bool:
    return draw(st.integers(0, 15)) == 0


@st.composite
def chunk_json(draw: st.DrawFn) -> bytes:
    """A chat.completion.chunk as providers write it, compact or spaced, with the fields that
    carry text (or look as if they might) and the usage forms seen in the wild."""
    delta: dict[str, Any] = {"role": "assistant"} if draw(st.booleans()) else {}
    if draw(st.integers(0, 4)):
        delta["content"] = draw(st.none() | _TEXT)
    for key in ("reasoning_content", "refusal"):
        if rarely(draw):
            delta[key] = draw(st.none() | _TEXT)
    if rarely(draw):
        delta["tool_calls"] = [{"index": 0, "function": {"name": draw(_TEXT), "arguments": draw(_TEXT)}}]
    choices: list[Any] = [] if draw(st.integers(0, 6)) == 0 else [{"index": 0, "delta": delta, "finish_reason": None}]
    if rarely(draw):
        choices = [{"index": 0, "text": draw(_TEXT)}]  # a legacy completions chunk
    body: dict[str, Any] = {"id": "c1", "object": "chat.completion.chunk", "choices": choices}
    usage = draw(st.sampled_from(["absent", "null", "counts", "counts", "odd"]))
    if usage == "null":
        body["usage"] = None
    elif usage == "counts":
        body["usage"] = {"prompt_tokens": draw(st.integers(0, 99)), "completion_tokens": draw(st.integers(0, 99))}
    elif usage == "odd":
        body["usage"] = draw(st.sampled_from([{"prompt_tokens": True}, [], "usage", {"completion_tokens": -1}]))
    raw = orjson.dumps(body)
    if draw(st.booleans()):
        raw = raw.replace(b'":', b'": ').replace(b",", b", ")  # spaced JSON
    return raw


_JUNK = st.sampled_from([b"[DONE]", b" [DONE] ", b"{not json", b"", b'{"usage":null,"usage":null}', b"\xff\xfe{"])
_USAGE_ONLY = b'{"id":"c1","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15}}'
_FRAMING = st.sampled_from(["data: "] * 12 + ["data:", "event", "id", "comment", "multiline", "crlf"])


@st.composite
def provider_streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """Events (mostly plain `data: ` ones, some in other framings) and cut points, mostly between
    events (where the fast path applies), some anywhere."""
    out = bytearray()
    boundaries = []
    values = draw(st.lists(chunk_json() | _JUNK, min_size=1, max_size=8))
    if draw(st.booleans()):  # the usage-only chunk (withheld or priced), anywhere in the stream
        values.insert(draw(st.integers(0, len(values))), _USAGE_ONLY)
    for value in values:
        framing = draw(_FRAMING)
        if framing == "event":
            out += b"event: message\n"
        elif framing == "id":
            out += b"id: 7\n"
        elif framing == "comment":
            out += b": keep-alive\n"
        if framing == "multiline" and len(value) > 2:
            out += b"data: " + value[:2] + b"\ndata: " + value[2:] + b"\n\n"
        elif framing == "crlf":
            out += b"data: " + value + b"\r\n\r\n"
        else:
            out += (b"data:" if framing == "data:" else b"data: ") + value + b"\n\n"
        boundaries.append(len(out))
    between = draw(st.lists(st.sampled_from(boundaries), max_size=2))
    anywhere = draw(st.lists(st.integers(0, len(out)), max_size=2))
    return bytes(out), sorted(set(between + anywhere))


def run(meter: StreamMeter, raw: bytes, cuts: list[int]) -> tuple[bytes, Any, bool, list[str]]:
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    out = b"".join(meter.feed(piece) for piece in pieces)
    return out, meter.usage, meter.saw_done, meter.text_parts


def events(raw: bytes) -> list[SSEEvent]:
    return SSEParser().feed(raw)


@given(
    stream=provider_streams(),
    forward_usage=st.booleans(),
    priced=st.booleans(),
)
@settings(max_examples=600, deadline=None)
def test_the_fast_path_and_the_general_path_agree_on_every_stream(
    stream: tuple[bytes, list[int]], forward_usage: bool, priced: bool
) -> None:
    raw, cuts = stream
    cost_of: CostOf | None = (lambda prompt, completion: f"0.{prompt:03d}{completion:03d}") if priced else None
    fast_out, fast_usage, fast_done, fast_text = run(StreamMeter(forward_usage, cost_of), raw, cuts)
    slow_out, slow_usage, slow_done, slow_text = run(general_meter(forward_usage, cost_of), raw, cuts)
    assert (fast_usage, fast_done, fast_text) == (slow_usage, slow_done, slow_text)
    assert events(fast_out) == events(slow_out)
    assert fast_out == slow_out


def test_a_chunk_of_plain_data_events_takes_the_fast_path() -> None:
    raw = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\ndata: [DONE]\n\n'
    assert SSEParser().feed_data_events(raw) == ['{"choices":[{"delta":{"content":"hi"}}],"usage":null}', "[DONE]"]


def test_a_chunk_with_anything_but_whole_one_line_data_events_is_left_to_the_general_path() -> None:
    for raw in [
        b"data: a\n\ndata: b",  # an unfinished event
        b"data: a\ndata: b\n\n",  # two data lines
        b"event: x\ndata: a\n\n",
        b": comment\n\n",
        b"data: a\r\n\r\n",
        b"data: a\n\n\n",
        b"data:a\n\n",
        b"\xef\xbb\xbfdata: a\n\n",
    ]:
        parser = SSEParser()
        assert parser.feed_data_events(raw) is None, raw
        assert parser.idle


def test_the_fast_path_is_not_taken_in_the_middle_of_an_event() -> None:
    parser = SSEParser()
    parser.feed(b"data: first half")
    assert parser.feed_data_events(b"data: a\n\n") is None


def test_events_after_a_withheld_usage_chunk_in_the_same_read_are_still_delivered() -> None:
    content = b'data: {"choices":[{"delta":{"content":"late"}}],"usage":null}\n\n'
    raw = b"data: " + _USAGE_ONLY + b"\n\n" + content + b"data: [DONE]\n\n"
    meter = StreamMeter(forward_usage=False)
    assert meter.feed(raw) == content + b"data: [DONE]\n\n"
    assert meter.text_parts == ["late"] and meter.usage is not None and meter.saw_done
