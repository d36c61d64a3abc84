"""`proxy/upstream.py`: what an upstream status means for failover (pure)."""

from __future__ import annotations

import pytest

from aichat_gateway.proxy.upstream import Classified, StatusKind, classify_status, parse_retry_after


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_2xx_is_ok(status: int) -> None:
    assert classify_status(status) == Classified(StatusKind.OK)


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_mean_the_listings_key_was_rejected(status: int) -> None:
    assert classify_status(status).kind is StatusKind.KEY_REJECTED


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_timeouts_rate_limits_and_5xx_are_retryable(status: int) -> None:
    assert classify_status(status).kind is StatusKind.RETRYABLE


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_never_followed_and_counts_as_a_failing_listing(status: int) -> None:
    assert classify_status(status, "5").kind is StatusKind.RETRYABLE


@pytest.mark.parametrize("status", [400, 404, 409, 413, 422])
def test_other_4xx_are_the_buyers_error_and_relayed(status: int) -> None:
    assert classify_status(status) == Classified(StatusKind.CLIENT_ERROR)


@pytest.mark.parametrize(
    "status, header, expected",
    [
        (429, "7", 7.0),
        (503, "1.5", 1.5),
        (429, None, None),
        (500, "0", 0.0),
    ],
)
def test_a_retryable_answer_carries_its_retry_after(status: int, header: str | None, expected: float | None) -> None:
    assert classify_status(status, header) == Classified(StatusKind.RETRYABLE, expected)


@pytest.mark.parametrize("status", [200, 400, 401])
def test_retry_after_is_ignored_unless_retryable(status: int) -> None:
    assert classify_status(status, "30").retry_after is None


@pytest.mark.parametrize(
    "value, expected",
    [
        ("5", 5.0),
        ("0", 0.0),
        ("2.5", 2.5),
        ("3600", 3600.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("-1", None),
        ("3601", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_retry_after_accepts_only_sane_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected
