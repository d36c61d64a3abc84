"""Settings, read once at start-up into a frozen object.

Sources, highest priority first: environment variables, then an optional TOML file named by
`GATEWAY_CONFIG_FILE`, then the defaults below. Every field is documented in the README's table.
"""

from __future__ import annotations

import os
import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

from croniter import croniter
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_METRICS_TOKEN = re.compile(r"[!-~]{16,512}")
_DEV_SECRET_HINT = "set GATEWAY_SECRET_KEY to at least 32 random characters (e.g. `openssl rand -hex 32`)"  # noqa: S105


class Settings(BaseSettings):
    """The gateway's whole configuration. Immutable: build a new one to change anything."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/aichat", alias="DATABASE_URL")
    redis_url: str = Field("redis://127.0.0.1:6379/0", alias="REDIS_URL")
    # Per process: a ceiling, not a reservation (connections open on demand).
    redis_max_connections: int = Field(2000, alias="GATEWAY_REDIS_MAX_CONNECTIONS", ge=2)
    # Comma-separated: the first key encrypts, every key decrypts (rotation). Never logged.
    secret_key: SecretStr = Field(alias="GATEWAY_SECRET_KEY")
    allow_private_upstreams: bool = Field(False, alias="GATEWAY_ALLOW_PRIVATE_UPSTREAMS")
    # Check a listed key with the provider (GET /models) before accepting the listing.
    check_listing_keys: bool = Field(True, alias="GATEWAY_CHECK_LISTING_KEYS")
    platform_fee: Decimal = Field(Decimal("0.10"), alias="GATEWAY_PLATFORM_FEE", ge=0, lt=1)
    stripe_secret_key: SecretStr | None = Field(None, alias="STRIPE_SECRET_KEY")
    stripe_webhook_secret: SecretStr | None = Field(None, alias="STRIPE_WEBHOOK_SECRET")
    stripe_api_base: str = Field("https://api.stripe.com", alias="STRIPE_API_BASE")
    # The dashboard's card form (Stripe.js, Card Element): the account's publishable key, and where
    # Stripe.js is loaded from (tests point it at localstripe's copy).
    stripe_publishable_key: str | None = Field(None, alias="STRIPE_PUBLISHABLE_KEY")
    stripe_js_url: str = Field("https://js.stripe.com/v3/", alias="STRIPE_JS_URL")
    # How far a webhook's signed timestamp may be from now (either way) before it is refused.
    stripe_webhook_tolerance: float = Field(300.0, alias="STRIPE_WEBHOOK_TOLERANCE", gt=0)
    # Bounds of one top-up, in USD (whole cents).
    topup_min_usd: Decimal = Field(Decimal("5"), alias="GATEWAY_TOPUP_MIN_USD", gt=0)
    topup_max_usd: Decimal = Field(Decimal("10000"), alias="GATEWAY_TOPUP_MAX_USD", gt=0)
    # The smallest seller payout, in USD: a request below it is refused, the weekly run skips it.
    payout_min_usd: Decimal = Field(Decimal("10"), alias="GATEWAY_PAYOUT_MIN_USD", gt=0)
    # Seller earnings become payable this many days after the request that earned them: the
    # chargeback window, so money refunded or disputed meanwhile has not left as a payout. 0: at once.
    earnings_hold_days: int = Field(7, alias="GATEWAY_EARNINGS_HOLD_DAYS", ge=0, le=366)
    # A payout above this many USD waits for an admin's approval before it is sent (0: every payout).
    payout_approval_usd: Decimal = Field(Decimal("1000"), alias="GATEWAY_PAYOUT_APPROVAL_USD", ge=0)

    # Every Redis key starts with this, so several deployments (or test runs) can share one Redis.
    redis_prefix: str = Field("aichat", alias="GATEWAY_REDIS_PREFIX", pattern=r"^[A-Za-z0-9_.-]{1,40}$")
    log_level: str = Field("info", alias="GATEWAY_LOG_LEVEL", pattern=r"^(debug|info|warning|error)$")
    log_json: bool = Field(True, alias="GATEWAY_LOG_JSON")

    max_body_bytes: int = Field(4 * 1024 * 1024, alias="GATEWAY_MAX_BODY_BYTES", ge=1024)
    max_messages: int = Field(2048, alias="GATEWAY_MAX_MESSAGES", ge=1)
    max_tokens_cap: int = Field(1_000_000, alias="GATEWAY_MAX_TOKENS_CAP", ge=1)
    max_n: int = Field(16, alias="GATEWAY_MAX_N", ge=1)

    upstream_connect_timeout: float = Field(5.0, alias="GATEWAY_UPSTREAM_CONNECT_TIMEOUT", gt=0)
    upstream_read_timeout: float = Field(120.0, alias="GATEWAY_UPSTREAM_READ_TIMEOUT", gt=0)
    upstream_max_connections: int = Field(1000, alias="GATEWAY_UPSTREAM_MAX_CONNECTIONS", ge=1)
    # Time to a first byte for all attempts of one request together (failover included).
    upstream_deadline_seconds: float = Field(180.0, alias="GATEWAY_UPSTREAM_DEADLINE", gt=0)
    upstream_attempts: int = Field(3, alias="GATEWAY_UPSTREAM_ATTEMPTS", ge=1, le=10)
    upstream_transport: str = Field("aiohttp", alias="GATEWAY_UPSTREAM_TRANSPORT", pattern=r"^(aiohttp|httpx)$")
    # A buyer who leaves mid-stream: the provider is read on for its usage (what it bills) for at
    # most this long and this many bytes, then closed; 0 closes it at once.
    usage_drain_seconds: float = Field(10.0, alias="GATEWAY_USAGE_DRAIN_SECONDS", ge=0, le=600)
    usage_drain_bytes: int = Field(1024 * 1024, alias="GATEWAY_USAGE_DRAIN_BYTES", ge=0)

    # `serve` also runs a settlement worker (a member of the same consumer group as `settle`).
    settle_in_serve: bool = Field(True, alias="GATEWAY_SETTLE_IN_SERVE")
    # `serve` also runs a job worker (background jobs and periodic tasks; `aichat-gateway worker`).
    worker_in_serve: bool = Field(True, alias="GATEWAY_WORKER_IN_SERVE")
    # A running job whose worker has not renewed its heartbeat for this long is run by another worker.
    job_heartbeat_timeout: float = Field(30.0, alias="GATEWAY_JOB_HEARTBEAT_TIMEOUT", gt=0)
    # Workers hear of new jobs at once (LISTEN); this often they also look for dead workers' jobs.
    job_poll_interval: float = Field(10.0, alias="GATEWAY_JOB_POLL_INTERVAL", gt=0)
    # When the job queue runs the weekly payout run (cron, UTC); empty: never (run `payouts run` from cron).
    payout_cron: str | None = Field("0 6 * * 1", alias="GATEWAY_PAYOUT_CRON")
    # How often each process compares hot balances in Redis with Postgres and repairs drift.
    reconcile_interval: float = Field(60.0, alias="GATEWAY_RECONCILE_INTERVAL", gt=0)
    # A request slower than this (start to last byte) is logged as slow_request with its listing.
    slow_request_seconds: float = Field(30.0, alias="GATEWAY_SLOW_REQUEST_SECONDS", gt=0)
    # A hold outlives its request by this much at most when a process dies; streams renew theirs.
    hold_ttl_seconds: float = Field(600.0, alias="GATEWAY_HOLD_TTL", gt=0)
    breaker_fail_max: int = Field(5, alias="GATEWAY_BREAKER_FAIL_MAX", ge=1)
    breaker_reset_timeout: float = Field(30.0, alias="GATEWAY_BREAKER_RESET_TIMEOUT", ge=0)

    key_cache_ttl: float = Field(30.0, alias="GATEWAY_KEY_CACHE_TTL", gt=0)
    listing_refresh_interval: float = Field(5.0, alias="GATEWAY_LISTING_REFRESH_INTERVAL", gt=0)
    jwt_ttl_seconds: int = Field(3600, alias="GATEWAY_JWT_TTL", ge=60)
    # How long a process trusts a session it checked (ends are pushed over pub/sub, not waited for).
    session_cache_ttl: float = Field(30.0, alias="GATEWAY_SESSION_CACHE_TTL", gt=0)
    cookie_secure: bool = Field(False, alias="GATEWAY_COOKIE_SECURE")
    shutdown_grace_seconds: float = Field(30.0, alias="GATEWAY_SHUTDOWN_GRACE", ge=0)

    # The web dashboard (pages, /static); 0 for API-only nodes, which then answer / with a JSON 404.
    dashboard: bool = Field(True, alias="GATEWAY_DASHBOARD")

    host: str = Field("127.0.0.1", alias="GATEWAY_HOST")
    port: int = Field(8000, alias="GATEWAY_PORT", ge=1, le=65535)
    workers: int = Field(1, alias="GATEWAY_WORKERS", ge=1, le=64)
    public_base_url: str | None = Field(None, alias="GATEWAY_PUBLIC_BASE_URL")
    # When set, GET /metrics answers only `Authorization: Bearer <token>` (401 otherwise); unset, it is open.
    metrics_token: SecretStr | None = Field(None, alias="GATEWAY_METRICS_TOKEN")

    @field_validator("secret_key")
    @classmethod
    def _secret_key_is_long_enough(cls, value: SecretStr) -> SecretStr:
        keys = [k.strip() for k in value.get_secret_value().split(",")]
        if not keys or any(len(k) < 32 for k in keys):
            raise ValueError(f"every GATEWAY_SECRET_KEY entry must be >= 32 characters; {_DEV_SECRET_HINT}")
        return value

    @field_validator("stripe_secret_key", "stripe_webhook_secret", "metrics_token", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        """An empty or blank secret means "not configured". Taken as a secret, an empty webhook
        secret would make every forged signature valid (HMAC with an empty key)."""
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token_is_strong(cls, value: SecretStr | None) -> SecretStr | None:
        """/metrics has no login limit, so the token must resist guessing; visible ASCII only, as an
        Authorization header carries it byte for byte."""
        if value is not None and not _METRICS_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "GATEWAY_METRICS_TOKEN must be 16 to 512 visible ASCII characters, no spaces "
                "(e.g. `openssl rand -hex 32`)"
            )
        return value

    @field_validator("payout_cron")
    @classmethod
    def _payout_cron_is_cron(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not croniter.is_valid(value):
            raise ValueError("GATEWAY_PAYOUT_CRON must be a cron expression (UTC), e.g. `0 6 * * 1`, or empty")
        return value.strip()

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: str) -> str:
        if not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_URL must start with postgresql://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_is_redis(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @property
    def secret_keys(self) -> tuple[str, ...]:
        """The master keys, current first."""
        return tuple(k.strip() for k in self.secret_key.get_secret_value().split(","))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("GATEWAY_CONFIG_FILE")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)


class SettingsError(ValueError):
    """The configuration is invalid; the message says which setting and why (never its secret value)."""


def load_settings(**overrides: Any) -> Settings:
    """Read settings once. Overrides (by field name) win over the environment; tests use them."""
    toml_path = os.environ.get("GATEWAY_CONFIG_FILE")
    if toml_path and not Path(toml_path).is_file():
        raise SettingsError(f"GATEWAY_CONFIG_FILE={toml_path} does not exist")
    try:
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"GATEWAY_CONFIG_FILE is not valid TOML: {exc}") from exc
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise SettingsError(_describe_validation_error(exc)) from None


def _describe_validation_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if errors is None:
        return str(exc)
    lines = []
    for err in errors(include_input=False):
        where = ".".join(str(p) for p in err.get("loc", ())) or "settings"
        lines.append(f"{where}: {err.get('msg')}")
    return "invalid settings: " + "; ".join(lines)
