"""Settings are read once, validated with messages that name the setting, and never echo secrets."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from aichat_gateway.config.settings import SettingsError, load_settings

GOOD_SECRET = "s" * 32


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GATEWAY_SECRET_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "GATEWAY_PLATFORM_FEE",
        "GATEWAY_PORT",
        "GATEWAY_CONFIG_FILE",
        "GATEWAY_ALLOW_PRIVATE_UPSTREAMS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults_apply_when_only_the_secret_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", GOOD_SECRET)
    settings = load_settings()
    assert settings.database_url.startswith("postgresql://")
    assert settings.platform_fee == Decimal("0.10")
    assert settings.allow_private_upstreams is False


def test_a_missing_secret_key_is_refused_with_the_setting_named() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_SECRET_KEY"):
        load_settings()


def test_a_short_secret_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", "tooshort-secret")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "tooshort-secret" not in str(caught.value)
    assert "32" in str(caught.value)


def test_every_comma_separated_master_key_must_be_long_enough(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", f"{GOOD_SECRET},short")
    with pytest.raises(SettingsError, match="GATEWAY_SECRET_KEY"):
        load_settings()


def test_rotation_keys_are_listed_current_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", f"{'n' * 32}, {'o' * 32}")
    assert load_settings().secret_keys == ("n" * 32, "o" * 32)


def test_a_non_numeric_port_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("GATEWAY_PORT", "eighty")
    with pytest.raises(SettingsError, match="GATEWAY_PORT"):
        load_settings()


def test_a_platform_fee_of_one_or_more_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("GATEWAY_PLATFORM_FEE", "1.5")
    with pytest.raises(SettingsError, match="GATEWAY_PLATFORM_FEE"):
        load_settings()


def test_a_database_url_that_is_not_postgres_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("DATABASE_URL", "mysql://localhost/db")
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        load_settings()


def test_settings_are_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", GOOD_SECRET)
    settings = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_a_toml_file_supplies_values_the_environment_does_not(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('GATEWAY_PORT = 9001\nGATEWAY_PLATFORM_FEE = "0.2"\n')
    monkeypatch.setenv("GATEWAY_SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("GATEWAY_CONFIG_FILE", str(config))
    monkeypatch.setenv("GATEWAY_PORT", "9002")
    settings = load_settings()
    assert settings.port == 9002  # the environment wins
    assert settings.platform_fee == Decimal("0.2")


def test_a_missing_toml_file_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("GATEWAY_CONFIG_FILE", str(tmp_path / "absent.toml"))
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings()


def test_a_broken_toml_file_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("GATEWAY_PORT = = 1\n")
    monkeypatch.setenv("GATEWAY_SECRET_KEY", GOOD_SECRET)
    monkeypatch.setenv("GATEWAY_CONFIG_FILE", str(config))
    with pytest.raises(SettingsError, match="TOML"):
        load_settings()


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_stripe_secret_means_stripe_is_not_configured(blank: str) -> None:
    """An empty webhook secret taken as a key would make every forged signature valid."""
    settings = load_settings(GATEWAY_SECRET_KEY="x" * 40, STRIPE_WEBHOOK_SECRET=blank, STRIPE_SECRET_KEY=blank)
    assert settings.stripe_webhook_secret is None and settings.stripe_secret_key is None
