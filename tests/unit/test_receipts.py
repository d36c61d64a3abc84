"""usage.cost is spliced into answers without re-encoding them."""

from __future__ import annotations

import orjson
import pytest

from aichat_gateway.proxy.receipts import add_cost


def test_the_cost_becomes_the_first_member_of_usage() -> None:
    answer = b'{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":5}}'
    assert orjson.loads(add_cost(answer, "0.000123"))["usage"] == {
        "cost": 0.000123,
        "prompt_tokens": 3,
        "completion_tokens": 5,
    }


def test_whitespace_around_the_usage_key_is_allowed() -> None:
    answer = b'{"usage" :  {\n "prompt_tokens": 1}}'
    assert orjson.loads(add_cost(answer, "1.500000"))["usage"]["cost"] == 1.5


def test_an_empty_usage_object_gets_only_the_cost() -> None:
    assert orjson.loads(add_cost(b'{"usage":{}}', "0.000000")) == {"usage": {"cost": 0.0}}


@pytest.mark.parametrize(
    "answer",
    [
        b'{"choices":[{"message":{"content":"usage"}}]}',  # the word as a value
        b'{"choices":[{"message":{"content":"\\"usage\\":{"}}]}',  # an escaped key inside a string
        b'{"usage":null}',
        b"not json at all",
    ],
)
def test_an_answer_without_a_usage_object_is_left_alone(answer: bytes) -> None:
    assert add_cost(answer, "0.000001") == answer


def test_a_usage_key_inside_content_does_not_fool_the_splice() -> None:
    answer = b'{"choices":[{"message":{"content":"\\"usage\\":{\\"x\\":1}"}}],"usage":{"total_tokens":2}}'
    parsed = orjson.loads(add_cost(answer, "0.000002"))
    assert parsed["usage"] == {"cost": 0.000002, "total_tokens": 2}
    assert parsed["choices"][0]["message"]["content"] == '"usage":{"x":1}'
