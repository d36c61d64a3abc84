"""Which Postgres and Redis `make run` and `make test` use: configured, local, or embedded (pure parts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aichat_gateway.config.settings import load_settings
from aichat_gateway.embedded import (
    POSTGRES,
    REDIS,
    Embed,
    EmbeddedError,
    Fail,
    LocalServices,
    Use,
    Wanted,
    address,
    decide,
    local_default,
    run_services,
    where,
    with_address,
)

DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/aichat"
CONFIGURED_DB = "postgresql://app:hunter2-secret@db.internal:6543/aichat?sslmode=require"


def wanted(configured: str | None) -> Wanted:
    return Wanted(POSTGRES, "DATABASE_URL", configured, DEFAULT_DB)


def test_a_configured_url_that_answers_is_used_as_it_is() -> None:
    assert decide(wanted(CONFIGURED_DB), answering=True) == Use(CONFIGURED_DB)


def test_a_configured_url_that_does_not_answer_fails_rather_than_embedding() -> None:
    choice = decide(wanted(CONFIGURED_DB), answering=False)
    assert isinstance(choice, Fail)
    assert "DATABASE_URL is set, but nothing answers at db.internal:6543" in choice.message
    assert "unset DATABASE_URL" in choice.message


def test_the_failure_message_never_shows_the_configured_password_or_user() -> None:
    choice = decide(wanted(CONFIGURED_DB), answering=False)
    assert isinstance(choice, Fail)
    assert "hunter2" not in choice.message and "app" not in choice.message.split("answers at")[1]


def test_without_a_configured_url_the_default_is_used_when_it_answers() -> None:
    assert decide(wanted(None), answering=True) == Use(DEFAULT_DB)


def test_without_a_configured_url_and_nothing_at_the_default_the_server_is_embedded() -> None:
    assert decide(wanted(None), answering=False) == Embed()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/aichat", ("127.0.0.1", 5432)),
        ("postgresql://postgres@localhost/aichat", ("localhost", 5432)),
        ("postgres://u:p@db:6000/x", ("db", 6000)),
        ("redis://127.0.0.1:6379/0", ("127.0.0.1", 6379)),
        ("rediss://:pw@cache.example/1", ("cache.example", 6379)),
        ("redis://[::1]:7000/0", ("::1", 7000)),
        ("unix:///run/redis/redis.sock?db=2", "/run/redis/redis.sock"),
        ("postgresql://postgres@/aichat?host=/run/postgresql", "/run/postgresql/.s.PGSQL.5432"),
        ("postgresql://postgres@:5433/aichat?host=/tmp/", "/tmp/.s.PGSQL.5433"),
        ("postgresql://postgres@h1:5432,h2:5432/aichat", None),
        ("postgresql://postgres@host:notaport/aichat", None),
    ],
)
def test_the_address_a_url_points_at(url: str, expected: object) -> None:
    assert address(url) == expected


def test_where_names_a_place_without_credentials() -> None:
    assert where("rediss://user:s3cret@cache.example:6380/0") == "cache.example:6380"
    assert where("redis://[::1]:7000/0") == "[::1]:7000"
    assert "s3cret" not in where("postgresql://u:s3cret@h1,h2/db")


def test_with_address_keeps_everything_but_host_and_port() -> None:
    moved = with_address(CONFIGURED_DB, "127.0.0.1", 40001)
    assert moved == "postgresql://app:hunter2-secret@127.0.0.1:40001/aichat?sslmode=require"
    assert with_address("redis://127.0.0.1:6379/3", "127.0.0.1", 40002) == "redis://127.0.0.1:40002/3"


def test_the_local_address_variables_move_only_the_default() -> None:
    environ = {"AICHAT_LOCAL_POSTGRES": "127.0.0.1:1", "AICHAT_LOCAL_REDIS": "[::1]:2"}
    assert local_default(POSTGRES, DEFAULT_DB, environ) == "postgresql://postgres@127.0.0.1:1/aichat"
    assert local_default(REDIS, "redis://127.0.0.1:6379/0", environ) == "redis://[::1]:2/0"
    assert local_default(POSTGRES, DEFAULT_DB, {}) == DEFAULT_DB


@pytest.mark.parametrize("bad", ["5432", "localhost:", "127.0.0.1:99999", ":5432"])
def test_a_malformed_local_address_is_refused_naming_the_variable(bad: str) -> None:
    with pytest.raises(EmbeddedError, match="AICHAT_LOCAL_POSTGRES must be host:port"):
        local_default(POSTGRES, DEFAULT_DB, {"AICHAT_LOCAL_POSTGRES": bad})


@pytest.fixture
def no_urls_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "GATEWAY_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_urls_in_environment")
def test_make_run_counts_a_url_as_configured_only_when_it_was_set() -> None:
    settings = load_settings(GATEWAY_SECRET_KEY="k" * 32, REDIS_URL="redis://cache.internal:6379/2")
    postgres, redis = run_services(settings, {})
    assert postgres == Wanted(POSTGRES, "DATABASE_URL", None, DEFAULT_DB)
    assert redis == Wanted(REDIS, "REDIS_URL", "redis://cache.internal:6379/2", "redis://127.0.0.1:6379/0")


@pytest.mark.usefixtures("no_urls_in_environment")
def test_make_run_counts_a_url_set_to_the_default_value_as_configured() -> None:
    settings = load_settings(GATEWAY_SECRET_KEY="k" * 32, DATABASE_URL=DEFAULT_DB)
    postgres, _ = run_services(settings, {})
    assert postgres.configured == DEFAULT_DB


@pytest.mark.usefixtures("no_urls_in_environment")
def test_make_run_counts_a_url_from_the_config_file_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('database_url = "postgresql://postgres@db.internal:5432/aichat"\n')
    monkeypatch.setenv("GATEWAY_CONFIG_FILE", str(config))
    postgres, redis = run_services(load_settings(GATEWAY_SECRET_KEY="k" * 32), {"AICHAT_LOCAL_REDIS": "127.0.0.1:1"})
    assert postgres.configured == "postgresql://postgres@db.internal:5432/aichat"
    assert (redis.configured, redis.default) == (None, "redis://127.0.0.1:1/0")


def test_the_summary_names_what_was_embedded_and_where_its_data_lives() -> None:
    services = LocalServices(
        "postgresql://postgres@127.0.0.1:5432/aichat", "redis://127.0.0.1:40002/0", (REDIS,), Path("/co/.local/run")
    )
    assert (
        services.summary()
        == "embedded Redis on 127.0.0.1:40002 (data in /co/.local/run; stopped when this command ends)"
    )


def test_there_is_no_summary_when_nothing_was_embedded() -> None:
    assert LocalServices(DEFAULT_DB, "redis://127.0.0.1:6379/0", (), Path("/co/.local/run")).summary() is None
