"""The dashboard's pure rules: where a login may send you back to, money as read, the form CSRF
field, the navigation per role and the Content-Security-Policy."""

from __future__ import annotations

import pytest

from aichat_gateway.dashboard.csp import content_security_policy
from aichat_gateway.dashboard.formcsrf import token_in_form
from aichat_gateway.dashboard.pages import safe_next
from aichat_gateway.dashboard.templating import PageUser, dollars, nav_for


@pytest.mark.parametrize("target", ["/app", "/app/keys", "/app/billing?tab=cards", "/app#x"])
def test_a_console_path_is_where_login_sends_you_back(target: str) -> None:
    assert safe_next(target) == target


@pytest.mark.parametrize(
    "target",
    [None, "", "https://evil.example/app", "//evil.example/app", "/\\evil.example", "app", "/login", "/api/keys"],
)
def test_anything_else_after_login_goes_to_the_overview(target: str | None) -> None:
    assert safe_next(target) == "/app"


@pytest.mark.parametrize(
    ("value", "shown"),
    [("10.000000", "10.00"), ("0.001230", "0.00123"), ("-1.5", "-1.50"), ("0.000001", "0.000001"), ("7", "7.00")],
)
def test_dollars_show_cents_and_only_the_digits_that_say_something(value: str, shown: str) -> None:
    assert dollars(value) == shown


def test_the_csrf_field_is_read_from_an_urlencoded_form() -> None:
    assert token_in_form(b"email=a%40b.c&csrf_token=abc.def&x=1") == "abc.def"


@pytest.mark.parametrize("body", [b"email=a", b"csrf_token=a&csrf_token=b", b""])
def test_no_field_or_two_of_them_give_no_token(body: bytes) -> None:
    assert token_in_form(body) is None


def test_the_admin_section_is_shown_to_admins_only() -> None:
    user = PageUser("1", "u@example.com", "user")
    admin = PageUser("2", "a@example.com", "admin")
    assert "/app/admin" not in [e["path"] for e in nav_for(user, "/app")]
    assert "/app/admin" in [e["path"] for e in nav_for(admin, "/app")]


def test_the_current_section_is_the_longest_prefix_of_the_path() -> None:
    admin = PageUser("2", "a@example.com", "admin")
    current = [e["path"] for e in nav_for(admin, "/app/admin/users") if e["current"]]
    assert current == ["/app/admin"]


def test_a_visitor_has_no_navigation() -> None:
    assert nav_for(None, "/login") == []


def test_the_policy_allows_no_inline_script_and_no_other_origin_without_stripe() -> None:
    policy = content_security_policy(None)
    assert "script-src 'self';" in policy
    assert "unsafe-inline" not in policy
    assert "frame-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy


def test_with_stripe_its_origin_may_serve_scripts_frames_and_calls() -> None:
    policy = content_security_policy("https://js.stripe.com/v3/")
    for directive in ("script-src 'self' https://js.stripe.com", "frame-src https://js.stripe.com"):
        assert directive in policy
    assert "connect-src 'self' https://js.stripe.com" in policy
