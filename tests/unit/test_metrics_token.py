"""GATEWAY_METRICS_TOKEN: the setting's rules, and the constant-time check of the scraper's header.

The HTTP behaviour (401 without the token, 200 with it, the token in no log or answer) is tested on a
real `serve` process in tests/integration/test_proxy_ops.py.
"""

from __future__ import annotations

import pytest

from aichat_gateway.config.settings import SettingsError, load_settings
from aichat_gateway.server.ops import bearer_matches

TOKEN = "metrics-" + "0123456789abcdef" * 2


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_METRICS_TOKEN", raising=False)
    monkeypatch.delenv("GATEWAY_CONFIG_FILE", raising=False)
    monkeypatch.setenv("GATEWAY_SECRET_KEY", "s" * 32)


def test_without_the_setting_metrics_need_no_token() -> None:
    assert load_settings().metrics_token is None


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_token_means_unset(monkeypatch: pytest.MonkeyPatch, blank: str) -> None:
    monkeypatch.setenv("GATEWAY_METRICS_TOKEN", blank)
    assert load_settings().metrics_token is None


def test_the_token_is_read_as_a_secret_that_never_prints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_METRICS_TOKEN", TOKEN)
    settings = load_settings()
    assert settings.metrics_token is not None and settings.metrics_token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings) and TOKEN not in str(settings)


@pytest.mark.parametrize(
    "weak", ["short-token", "x" * 15, "has a space in it!", "t\u00f6ken-0123456789abcdef", "x" * 513]
)
def test_a_guessable_or_unsendable_token_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, weak: str
) -> None:
    monkeypatch.setenv("GATEWAY_METRICS_TOKEN", weak)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert "GATEWAY_METRICS_TOKEN" in str(refused.value)
    assert weak not in str(refused.value)


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer {TOKEN} "])
def test_the_bearer_header_with_the_token_matches(header: str) -> None:
    assert bearer_matches(header, TOKEN)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        TOKEN,
        f"Basic {TOKEN}",
        f"Token {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Bearer {TOKEN.upper()}",
        f"Bearer x{TOKEN}",
        "Bearer \u00ff" + TOKEN[1:],
    ],
)
def test_any_other_header_does_not_match(header: str | None) -> None:
    assert not bearer_matches(header, TOKEN)


def test_an_empty_token_matches_no_header() -> None:
    assert not bearer_matches(None, "")
    assert not bearer_matches("Bearer ", "")
