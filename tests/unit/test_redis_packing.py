"""`pack_commands` writes the same bytes as redis-py for every argument type the gateway sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from aichat_gateway.redismux import pack_commands

ARG = st.one_of(
    st.binary(max_size=64),
    st.text(max_size=32).filter(lambda t: " " not in t),  # redis-py splits a spaced command name
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
)


def redis_py_packing(commands: list[tuple[object, ...]]) -> bytes:
    return b"".join(Connection().pack_commands(commands))


@given(
    st.lists(
        st.tuples(st.sampled_from(["EVALSHA", "XADD", "EVAL"])).flatmap(
            lambda name: st.lists(ARG, max_size=8).map(lambda args: (*name, *args))
        ),
        min_size=1,
        max_size=4,
    )
)
def test_packing_matches_redis_py_byte_for_byte(commands: list[tuple[object, ...]]) -> None:
    assert pack_commands(commands) == redis_py_packing(commands)


def test_a_command_is_a_resp_array_of_bulk_strings() -> None:
    assert pack_commands([("SET", "k", 5)]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"


def test_multibyte_text_is_counted_in_bytes_not_characters() -> None:
    assert pack_commands([("GET", "é")]) == b"*2\r\n$3\r\nGET\r\n$2\r\n\xc3\xa9\r\n"


@pytest.mark.parametrize("bad", [True, None, object(), ["list"]])
def test_an_argument_redis_cannot_hold_is_refused_before_anything_is_sent(bad: object) -> None:
    with pytest.raises(DataError):
        pack_commands([("SET", "k", bad)])
