"""`chat.redis_unreachable`: which failures of the finishing pipeline are worth trying again."""

from __future__ import annotations

import pytest
from redis.exceptions import BusyLoadingError, ConnectionError, ResponseError, TimeoutError

from aichat_gateway.proxy.finish import redis_unreachable


@pytest.mark.parametrize(
    "failure",
    [
        ConnectionError("Connection refused"),
        BusyLoadingError("Redis is loading the dataset in memory"),
        TimeoutError("Timeout reading from socket"),
        ConnectionResetError(104, "Connection reset by peer"),
    ],
)
def test_a_redis_that_is_away_or_still_loading_is_worth_trying_again(failure: Exception) -> None:
    assert redis_unreachable(failure)


@pytest.mark.parametrize("result", [ResponseError("WRONGTYPE Operation against a key"), b"1700000000000-0", 1])
def test_an_answer_or_a_command_error_is_not_tried_again(result: object) -> None:
    assert not redis_unreachable(result)
