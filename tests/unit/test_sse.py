"""The sans-I/O SSE parser and the OpenAI chunk helpers."""

from __future__ import annotations

import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aichat_gateway.proxy.sse import (
    SSEError,
    SSEEvent,
    SSEParser,
    Usage,
    content_text_of_chunk,
    is_done,
    usage_from_event,
)


def feed_all(chunks: list[bytes], parser: SSEParser | None = None) -> list[SSEEvent]:
    parser = parser or SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def message(data: str, event: str = "message", id: str | None = None) -> SSEEvent:
    return SSEEvent(event=event, data=data, id=id)


def chunk_event(payload: object) -> SSEEvent:
    return message(orjson.dumps(payload).decode())


# --- framing -------------------------------------------------------------------------------------


def test_a_complete_event_in_one_chunk_yields_one_event() -> None:
    assert feed_all([b"data: hello\n\n"]) == [message("hello")]


def test_a_data_line_split_across_two_chunks_yields_one_event() -> None:
    assert feed_all([b"data: hel", b"lo\n\n"]) == [message("hello")]


def test_an_event_is_not_dispatched_before_its_blank_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: hello\n") == []
    assert parser.feed(b"\n") == [message("hello")]


def test_two_events_in_one_chunk_yield_two_events() -> None:
    assert feed_all([b"data: a\n\ndata: b\n\n"]) == [message("a"), message("b")]


def test_lf_line_endings_are_understood() -> None:
    assert feed_all([b"event: e\ndata: x\n\n"]) == [message("x", event="e")]


def test_crlf_line_endings_are_understood() -> None:
    assert feed_all([b"event: e\r\ndata: x\r\n\r\n"]) == [message("x", event="e")]


def test_cr_line_endings_are_understood() -> None:
    assert feed_all([b"event: e\rdata: x\r\r"]) == [message("x", event="e")]


def test_a_crlf_split_between_chunks_is_one_line_ending() -> None:
    # Were the LF taken for a second line ending, "data: b" would join a dispatched event early.
    assert feed_all([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [message("a\nb")]


def test_a_blank_crlf_line_split_between_chunks_dispatches_once() -> None:
    assert feed_all([b"data: a\r\n\r", b"\n", b"data: b\r\n\r\n"]) == [message("a"), message("b")]


def test_a_cr_at_a_chunk_end_followed_by_cr_is_two_line_endings() -> None:
    assert feed_all([b"data: a\r", b"\r"]) == [message("a")]


def test_a_cr_at_a_chunk_end_followed_by_an_empty_chunk_still_pairs_with_the_next_lf() -> None:
    assert feed_all([b"data: a\r", b"", b"\ndata: b\n\n"]) == [message("a\nb")]


def test_mixed_line_endings_in_one_stream_are_understood() -> None:
    assert feed_all([b"data: a\rdata: b\r\ndata: c\n\n"]) == [message("a\nb\nc")]


def test_multi_line_data_is_joined_with_newlines() -> None:
    assert feed_all([b"data: one\ndata: two\ndata: three\n\n"]) == [message("one\ntwo\nthree")]


def test_comment_lines_are_ignored() -> None:
    assert feed_all([b": keep-alive\ndata: x\n: more\n\n"]) == [message("x")]


def test_a_stream_of_only_comments_yields_nothing() -> None:
    assert feed_all([b": ping\n\n: ping\n\n"]) == []


def test_the_event_field_sets_the_event_type() -> None:
    assert feed_all([b"event: delta\ndata: x\n\n"]) == [message("x", event="delta")]


def test_the_event_type_defaults_to_message() -> None:
    assert feed_all([b"data: x\n\n"])[0].event == "message"


def test_the_event_type_resets_after_each_dispatch() -> None:
    events = feed_all([b"event: a\ndata: 1\n\ndata: 2\n\n"])
    assert [e.event for e in events] == ["a", "message"]


def test_the_id_field_sets_the_event_id() -> None:
    assert feed_all([b"id: 42\ndata: x\n\n"]) == [message("x", id="42")]


def test_the_id_is_none_until_the_stream_sets_one() -> None:
    assert feed_all([b"data: x\n\n"])[0].id is None


def test_the_last_event_id_persists_across_events() -> None:
    events = feed_all([b"id: 7\ndata: a\n\ndata: b\n\n"])
    assert [e.id for e in events] == ["7", "7"]


def test_an_empty_id_field_resets_the_id_to_empty() -> None:
    events = feed_all([b"id: 7\ndata: a\n\nid\ndata: b\n\n"])
    assert [e.id for e in events] == ["7", ""]


def test_an_id_containing_nul_is_ignored() -> None:
    events = feed_all([b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n"])
    assert [e.id for e in events] == ["1", "1"]


def test_one_space_after_the_colon_is_stripped() -> None:
    assert feed_all([b"data: x\n\n"]) == [message("x")]


def test_only_the_first_space_after_the_colon_is_stripped() -> None:
    assert feed_all([b"data:  x \n\n"]) == [message(" x ")]


def test_a_value_without_a_space_after_the_colon_is_kept_whole() -> None:
    assert feed_all([b"data:x\n\n"]) == [message("x")]


def test_a_colon_inside_the_value_is_kept() -> None:
    assert feed_all([b'data: {"a": "b:c"}\n\n']) == [message('{"a": "b:c"}')]


def test_a_line_without_a_colon_is_a_field_with_an_empty_value() -> None:
    assert feed_all([b"data\n\n"]) == [message("")]


def test_an_empty_data_field_counts_as_a_data_line() -> None:
    assert feed_all([b"data:\ndata\n\n"]) == [message("\n")]


def test_a_blank_line_without_data_dispatches_nothing() -> None:
    assert feed_all([b"event: ping\n\n", b"\n\n"]) == []


def test_an_event_type_without_data_does_not_leak_into_the_next_event() -> None:
    assert feed_all([b"event: ping\n\ndata: x\n\n"]) == [message("x")]


def test_unknown_fields_are_ignored() -> None:
    assert feed_all([b"foo: bar\ndata: x\n\n"]) == [message("x")]


def test_a_valid_retry_field_is_remembered() -> None:
    parser = SSEParser()
    feed_all([b"retry: 3000\n\n"], parser)
    assert parser.retry_ms == 3000


def test_a_retry_field_that_is_not_all_digits_is_ignored() -> None:
    parser = SSEParser()
    feed_all([b"retry: 30s\n\n"], parser)
    assert parser.retry_ms is None


def test_an_unfinished_event_at_the_end_of_the_stream_is_not_dispatched() -> None:
    assert feed_all([b"data: a\n\ndata: cut"]) == [message("a")]


def test_a_bom_at_the_start_of_the_stream_is_stripped() -> None:
    assert feed_all([b"\xef\xbb\xbfdata: x\n\n"]) == [message("x")]


def test_a_bom_split_across_chunks_is_stripped() -> None:
    assert feed_all([b"\xef", b"\xbb", b"\xbfdata: x\n\n"]) == [message("x")]


def test_a_bom_after_the_start_of_the_stream_is_not_stripped() -> None:
    # The second line's field name becomes "\ufeffdata", an unknown field.
    assert feed_all([b"data: a\n\n\xef\xbb\xbfdata: b\n\n"]) == [message("a")]


def test_only_one_leading_bom_is_stripped() -> None:
    assert feed_all([b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n"]) == []


def test_bytes_resembling_a_bom_prefix_are_kept() -> None:
    assert feed_all([b"\xef\xbb", b"data: x\n\n"]) == []


def test_a_multibyte_character_split_across_chunks_is_decoded_whole() -> None:
    raw = "data: héllo €\n\n".encode()
    split = raw.index("€".encode()) + 1
    assert feed_all([raw[:split], raw[split:]]) == [message("héllo €")]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert feed_all([b"data: a\xffb\n\n"]) == [message("a\ufffdb")]


def test_an_empty_chunk_yields_nothing() -> None:
    assert SSEParser().feed(b"") == []


# --- bounded buffer ------------------------------------------------------------------------------


def test_sse_error_is_a_value_error() -> None:
    assert issubclass(SSEError, ValueError)


def test_a_line_longer_than_the_limit_in_one_chunk_raises() -> None:
    with pytest.raises(SSEError):
        SSEParser(max_line_bytes=16).feed(b"data: " + b"x" * 20 + b"\n\n")


def test_an_unterminated_line_longer_than_the_limit_raises() -> None:
    with pytest.raises(SSEError):
        SSEParser(max_line_bytes=16).feed(b"data: " + b"x" * 20)


def test_a_line_longer_than_the_limit_across_many_chunks_raises() -> None:
    parser = SSEParser(max_line_bytes=16)
    with pytest.raises(SSEError):
        for _ in range(10):
            parser.feed(b"xxx")


def test_a_line_exactly_at_the_limit_is_accepted() -> None:
    line = b"data: " + b"x" * 10
    assert SSEParser(max_line_bytes=len(line)).feed(line + b"\n\n") == [message("x" * 10)]


def test_many_lines_each_under_the_limit_are_accepted() -> None:
    stream = b"data: 0123456789\n" * 1000 + b"\n"
    assert len(SSEParser(max_line_bytes=16).feed(stream)[0].data) == 1000 * 11 - 1


def test_the_default_limit_is_one_mebibyte() -> None:
    with pytest.raises(SSEError):
        SSEParser().feed(b"data: " + b"x" * (1024 * 1024))


def test_a_long_line_arriving_in_small_chunks_is_parsed_in_linear_time() -> None:
    payload = b"x" * 900_000
    stream = b"data: " + payload + b"\n\n"
    chunks = [stream[i : i + 64] for i in range(0, len(stream), 64)]
    started = time.perf_counter()
    events = feed_all(chunks)
    elapsed = time.perf_counter() - started
    assert events == [message(payload.decode())]
    assert elapsed < 2.0  # a quadratic re-join of the pending line takes far longer


# --- splitting property --------------------------------------------------------------------------

_LINE_ENDINGS = st.sampled_from([b"\n", b"\r\n", b"\r"])
_VALUE_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"), max_size=20)
_NAME_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00:"),
    min_size=1,
    max_size=10,
)


@st.composite
def sse_streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """A valid stream with random line endings, comments and BOM, and the events it must yield."""
    lines: list[bytes] = []
    expected: list[SSEEvent] = []
    last_id: str | None = None
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        if draw(st.booleans()):
            lines.append(b":" + draw(_VALUE_TEXT).encode())
        event_type = draw(st.none() | _NAME_TEXT)
        if event_type is not None:
            lines.append(b"event: " + event_type.encode())
        event_id = draw(st.none() | _VALUE_TEXT)
        if event_id is not None:
            lines.append(b"id: " + event_id.encode())
            last_id = event_id
        data_lines = draw(st.lists(_VALUE_TEXT, min_size=1, max_size=4))
        lines.extend(b"data: " + line.encode() for line in data_lines)
        lines.append(b"")
        expected.append(SSEEvent(event=event_type or "message", data="\n".join(data_lines), id=last_id))

    out = bytearray(b"\xef\xbb\xbf" if draw(st.booleans()) else b"")
    previous = b""
    for line in lines:
        ending = draw(_LINE_ENDINGS)
        if previous == b"\r" and not line and ending == b"\n":
            ending = b"\r\n"  # CR then LF would be one CRLF, swallowing this blank line
        out += line + ending
        previous = ending
    return bytes(out), expected


@given(stream=sse_streams(), cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
@settings(max_examples=300)
def test_any_split_of_a_valid_stream_yields_the_same_events_as_feeding_it_whole(
    stream: tuple[bytes, list[SSEEvent]], cuts: list[int]
) -> None:
    raw, _ = stream
    points = sorted({cut % (len(raw) + 1) for cut in cuts})
    chunks = [raw[a:b] for a, b in zip([0, *points], [*points, len(raw)], strict=True)]
    assert feed_all(chunks) == feed_all([raw])


@given(stream=sse_streams())
@settings(max_examples=200)
def test_a_valid_stream_yields_the_events_it_was_built_from(stream: tuple[bytes, list[SSEEvent]]) -> None:
    raw, expected = stream
    assert feed_all([raw]) == expected


@given(stream=sse_streams())
@settings(max_examples=100)
def test_a_valid_stream_fed_byte_by_byte_yields_the_events_it_was_built_from(
    stream: tuple[bytes, list[SSEEvent]],
) -> None:
    raw, expected = stream
    assert feed_all([raw[i : i + 1] for i in range(len(raw))]) == expected


# --- OpenAI chunk helpers ------------------------------------------------------------------------

USAGE_CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "choices": [],
    "usage": {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46},
}


def test_usage_is_read_from_a_chunk_carrying_a_usage_object() -> None:
    assert usage_from_event(chunk_event(USAGE_CHUNK)) == Usage(prompt_tokens=12, completion_tokens=34)


def test_a_chunk_with_null_usage_gives_no_usage() -> None:
    assert usage_from_event(chunk_event({"choices": [{"delta": {"content": "hi"}}], "usage": None})) is None


def test_a_chunk_without_usage_gives_no_usage() -> None:
    assert usage_from_event(chunk_event({"choices": [{"delta": {"content": "hi"}}]})) is None


def test_the_done_sentinel_gives_no_usage() -> None:
    assert usage_from_event(message("[DONE]")) is None


def test_malformed_json_gives_no_usage() -> None:
    assert usage_from_event(message('{"usage": {"prompt_tokens": 1,')) is None


def test_json_that_is_not_an_object_gives_no_usage() -> None:
    assert usage_from_event(message('["usage"]')) is None


def test_usage_with_a_missing_count_gives_no_usage() -> None:
    assert usage_from_event(chunk_event({"usage": {"prompt_tokens": 5}})) is None


def test_usage_with_non_integer_counts_gives_no_usage() -> None:
    assert usage_from_event(chunk_event({"usage": {"prompt_tokens": "5", "completion_tokens": 1}})) is None
    assert usage_from_event(chunk_event({"usage": {"prompt_tokens": True, "completion_tokens": 1}})) is None
    assert usage_from_event(chunk_event({"usage": {"prompt_tokens": 1.5, "completion_tokens": 1}})) is None


def test_usage_with_negative_counts_gives_no_usage() -> None:
    assert usage_from_event(chunk_event({"usage": {"prompt_tokens": -1, "completion_tokens": 1}})) is None


def test_usage_with_a_count_beyond_64_bits_gives_no_usage() -> None:
    assert usage_from_event(message('{"usage": {"prompt_tokens": 1' + "0" * 30 + ', "completion_tokens": 1}}')) is None


def test_the_word_usage_inside_content_is_not_taken_for_usage() -> None:
    assert usage_from_event(chunk_event({"choices": [{"delta": {"content": '"usage": 5'}}]})) is None


def test_usage_is_read_when_the_content_mentions_a_null_usage() -> None:
    chunk = {
        "choices": [{"delta": {"content": '"usage":null'}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2},
    }
    assert usage_from_event(chunk_event(chunk)) == Usage(1, 2)


def test_usage_is_read_when_a_nested_usage_is_null() -> None:
    chunk = {"choices": [{"usage": None}], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}
    assert usage_from_event(chunk_event(chunk)) == Usage(1, 2)


def test_usage_is_read_from_pretty_printed_json() -> None:
    data = '{\n  "choices": [],\n  "usage": {"prompt_tokens": 3, "completion_tokens": 4}\n}'
    assert usage_from_event(message(data)) == Usage(3, 4)


def test_the_done_sentinel_is_recognised() -> None:
    assert is_done(message("[DONE]"))


def test_a_data_chunk_is_not_the_done_sentinel() -> None:
    assert not is_done(chunk_event(USAGE_CHUNK))


def test_content_text_is_extracted_from_a_delta() -> None:
    assert content_text_of_chunk(chunk_event({"choices": [{"index": 0, "delta": {"content": "Hello"}}]})) == "Hello"


def test_tool_call_arguments_are_extracted_from_a_delta() -> None:
    chunk = {
        "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"name": "get_weather", "arguments": '{"ci'}}]}}]
    }
    assert content_text_of_chunk(chunk_event(chunk)) == 'get_weather{"ci'


def test_reasoning_content_is_extracted_from_a_delta() -> None:
    chunk = {"choices": [{"delta": {"reasoning_content": "think", "content": None}}]}
    assert content_text_of_chunk(chunk_event(chunk)) == "think"


def test_texts_of_all_choices_are_extracted() -> None:
    chunk = {"choices": [{"delta": {"content": "a"}}, {"delta": {"content": "b"}}]}
    assert content_text_of_chunk(chunk_event(chunk)) == "ab"


def test_a_chunk_with_a_role_only_delta_has_no_text() -> None:
    assert content_text_of_chunk(chunk_event({"choices": [{"delta": {"role": "assistant"}}]})) == ""


def test_the_done_sentinel_has_no_content_text() -> None:
    assert content_text_of_chunk(message("[DONE]")) == ""


def test_malformed_json_has_no_content_text() -> None:
    assert content_text_of_chunk(message('{"choices": [')) == ""


@given(
    payload=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "choices",
                        "delta",
                        "content",
                        "tool_calls",
                        "function",
                        "arguments",
                        "name",
                        "usage",
                        "prompt_tokens",
                        "completion_tokens",
                        "text",
                        "function_call",
                        "x",
                    ]
                ),
                inner,
                max_size=4,
            )
        ),
        max_leaves=20,
    )
)
def test_the_chunk_helpers_never_raise_on_odd_json(payload: object) -> None:
    try:
        data = orjson.dumps(payload).decode()
    except orjson.JSONEncodeError:
        return  # integers beyond 64 bits cannot be serialised; nothing to feed
    event = message(data)
    assert isinstance(content_text_of_chunk(event), str)
    usage = usage_from_event(event)
    assert usage is None or isinstance(usage, Usage)
    assert isinstance(is_done(event), bool)


@given(
    content=st.text(max_size=40),
    role=st.sampled_from([None, "assistant"]),
    extra=st.sampled_from(["", ',"refusal":null', ',"reasoning_content":"think"']),
)
def test_the_fast_content_path_agrees_with_the_json_path(content: str, role: str | None, extra: str) -> None:
    delta = ('"role":"assistant",' if role else "") + '"content":' + orjson.dumps(content).decode() + extra
    data = '{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{' + delta + '}}],"usage":null}'
    from aichat_gateway.proxy import sse

    parsed = orjson.loads(data)
    expected: list[str] = []
    sse._delta_texts(parsed["choices"][0]["delta"], expected)
    assert sse.content_text_of_chunk(SSEEvent("message", data, None)) == "".join(expected)
