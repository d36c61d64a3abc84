"""LoginLimiter against real Redis, with small windows so the limits are quick to reach."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from aichat_gateway.accounts.errors import TooManyAttempts
from aichat_gateway.accounts.loginlimit import LoginLimiter, Window
from aichat_gateway.config.settings import Settings


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def limiter(redis: Redis, settings: Settings, email_limit: int = 3, ip_limit: int = 5) -> LoginLimiter:
    return LoginLimiter(redis, settings.redis_prefix, per_email=Window(email_limit, 60), per_ip=Window(ip_limit, 120))


def fresh_ip() -> str:
    return f"2001:db8::{uuid.uuid4().hex[:4]}"


def fresh_email() -> str:
    return f"limit-{uuid.uuid4().hex[:8]}@example.com"


async def test_attempts_up_to_the_email_limit_are_allowed(redis: Redis, settings: Settings) -> None:
    limits, email = limiter(redis, settings), fresh_email()
    allowed = [await limits.attempt(email, fresh_ip()) for _ in range(3)]
    assert all(limits.email_key(email) in dict(attempt.keys) for attempt in allowed)
    assert int(await redis.get(limits.email_key(email))) == 3


async def test_the_attempt_after_the_email_limit_is_refused_with_the_window_left(
    redis: Redis, settings: Settings
) -> None:
    limits, email = limiter(redis, settings), fresh_email()
    for _ in range(3):
        await limits.attempt(email, fresh_ip())
    with pytest.raises(TooManyAttempts) as caught:
        await limits.attempt(email, fresh_ip())
    assert 0 < caught.value.retry_after <= 60


async def test_the_email_limit_ignores_case_and_surrounding_spaces(redis: Redis, settings: Settings) -> None:
    limits, email = limiter(redis, settings), fresh_email()
    for variant in (email, email.upper(), f"  {email} "):
        await limits.attempt(variant, fresh_ip())
    with pytest.raises(TooManyAttempts):
        await limits.attempt(email, fresh_ip())


async def test_the_ip_limit_holds_across_different_emails(redis: Redis, settings: Settings) -> None:
    limits, ip = limiter(redis, settings), fresh_ip()
    for _ in range(5):
        await limits.attempt(fresh_email(), ip)
    with pytest.raises(TooManyAttempts) as caught:
        await limits.attempt(fresh_email(), ip)
    assert 60 < caught.value.retry_after <= 120


async def test_a_successful_attempt_gives_its_count_back(redis: Redis, settings: Settings) -> None:
    limits, email, ip = limiter(redis, settings), fresh_email(), fresh_ip()
    for _ in range(10):  # more than the e-mail limit: successes never add up to a block
        await limits.succeeded(await limits.attempt(email, ip))
    assert int(await redis.get(limits.email_key(email))) == 0
    assert int(await redis.get(limits.ip_key(ip))) == 0


async def test_the_counters_always_carry_a_ttl(redis: Redis, settings: Settings) -> None:
    limits, email, ip = limiter(redis, settings), fresh_email(), fresh_ip()
    await limits.succeeded(await limits.attempt(email, ip))
    await redis.delete(limits.email_key(email))  # the window ended between attempt and success
    await limits.succeeded(await limits.attempt(email, ip))
    for key in (limits.email_key(email), limits.ip_key(ip)):
        assert await redis.ttl(key) > 0


async def test_redis_never_sees_the_email_address(redis: Redis, settings: Settings) -> None:
    limits, email = limiter(redis, settings), fresh_email()
    await limits.attempt(email, fresh_ip())
    assert email.split("@")[0] not in limits.email_key(email)
    assert limits.email_key(email).startswith(f"{settings.redis_prefix}:login:")
