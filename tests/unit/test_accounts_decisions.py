"""The pure decisions of the accounts package: caching, rate limits, CSRF and input validation."""

from __future__ import annotations

import pytest

from aichat_gateway.accounts.backend import bearer_token, csrf_required, same_origin
from aichat_gateway.accounts.errors import InvalidInput, NotFound
from aichat_gateway.accounts.keycache import entry_ttl, is_fresh
from aichat_gateway.accounts.keys import parse_key_id, validate_key_name
from aichat_gateway.accounts.loginlimit import Counted, Window, retry_after
from aichat_gateway.accounts.users import normalise_email

WINDOW = Window(limit=10, seconds=900)


def test_an_entry_is_fresh_until_its_ttl_has_passed() -> None:
    assert is_fresh(stored_at=100.0, now=129.9, ttl=30.0)
    assert not is_fresh(stored_at=100.0, now=130.0, ttl=30.0)


def test_an_entry_from_the_future_is_not_fresh() -> None:
    assert not is_fresh(stored_at=100.0, now=99.0, ttl=30.0)


def test_negative_entries_use_the_short_negative_ttl() -> None:
    assert entry_ttl(False, True, ttl=30.0, negative_ttl=2.0, unsubscribed_ttl=1.0) == 2.0


def test_positive_entries_use_the_full_ttl_while_subscribed_to_revocations() -> None:
    assert entry_ttl(True, True, ttl=30.0, negative_ttl=2.0, unsubscribed_ttl=1.0) == 30.0


def test_positive_entries_are_trusted_for_one_second_while_not_subscribed() -> None:
    assert entry_ttl(True, False, ttl=30.0, negative_ttl=2.0, unsubscribed_ttl=1.0) == 1.0


def test_attempts_up_to_the_limit_proceed() -> None:
    assert retry_after([(Counted(count=10, ttl=600), WINDOW)]) is None


def test_the_attempt_over_the_limit_waits_for_the_window_to_end() -> None:
    assert retry_after([(Counted(count=11, ttl=600), WINDOW)]) == 600


def test_the_longest_of_two_full_windows_decides_the_wait() -> None:
    counts = [(Counted(count=11, ttl=300), WINDOW), (Counted(count=200, ttl=700), Window(100, 900))]
    assert retry_after(counts) == 700


def test_a_full_window_without_a_ttl_waits_a_whole_window() -> None:
    assert retry_after([(Counted(count=11, ttl=-1), WINDOW)]) == 900


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_cookie_requests_with_unsafe_methods_need_a_csrf_token(method: str) -> None:
    assert csrf_required(method, via_cookie=True)


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS"])
def test_cookie_requests_with_safe_methods_need_no_csrf_token(method: str) -> None:
    assert not csrf_required(method, via_cookie=True)


def test_bearer_requests_never_need_a_csrf_token() -> None:
    assert not csrf_required("POST", via_cookie=False)


def test_same_origin_compares_the_origin_host_with_the_host_header() -> None:
    assert same_origin("https://gw.example.com", "gw.example.com")
    assert not same_origin("https://evil.example", "gw.example.com")
    assert not same_origin(None, "gw.example.com")


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("bearer abc.def.ghi") == "abc.def.ghi"


def test_a_basic_authorization_header_is_refused() -> None:
    with pytest.raises(Exception, match="Bearer"):
        bearer_token("Basic dXNlcjpwYXNz")


@pytest.mark.parametrize("email", ["  Alice@Example.COM ", "a.b+tag@sub.example.org"])
def test_sane_emails_are_accepted_and_stripped(email: str) -> None:
    assert normalise_email(email) == email.strip()


@pytest.mark.parametrize(
    "email",
    [
        "",
        "alice",
        "alice@",
        "@example.com",
        "a b@example.com",
        "alice@example",
        "a@@b.co",
        "x" * 300 + "@example.com",
        "alice@exa mple.com",
        "alice\n@example.com",
    ],
)
def test_malformed_emails_are_refused(email: str) -> None:
    with pytest.raises(InvalidInput):
        normalise_email(email)


def test_a_key_name_is_stripped() -> None:
    assert validate_key_name("  ci  ") == "ci"


@pytest.mark.parametrize("name", ["", "   ", "n" * 101, "a\x00b", 7])
def test_bad_key_names_are_refused_naming_the_field(name: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_key_name(name)
    assert caught.value.param == "name"


def test_a_key_id_that_is_not_a_uuid_is_not_found() -> None:
    with pytest.raises(NotFound):
        parse_key_id("../../etc/passwd")
