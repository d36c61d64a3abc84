"""Login brute force meets the rate limit (accounts/loginlimit.py): 10 attempts per e-mail and 100 per
client address per 15 minutes; past either, 429 with Retry-After, whatever the password."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from aichat_gateway.accounts.loginlimit import LoginLimiter
from tests.support.attack import PASSWORD, Gateway, assert_error

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="module")]

PER_EMAIL, PER_IP, WINDOW = 10, 100, 15 * 60


def assert_limited(answer: httpx.Response) -> None:
    error = assert_error(answer, 429)
    assert error["code"] == "too_many_attempts"
    assert 1 <= int(answer.headers["retry-after"]) <= WINDOW
    assert "access_token" not in answer.text and "set-cookie" not in answer.headers


async def test_guessing_one_accounts_password_is_cut_off_after_ten_attempts(
    gateway: Gateway, stranger: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = stranger
    victim = await gateway.user("brute")
    spellings = [victim.email, victim.email.upper(), f"  {victim.email} "]  # one counter for all of them
    for attempt in range(PER_EMAIL):
        body = {"email": spellings[attempt % 3], "password": f"guess-{attempt:04d}"}
        assert_error(await client.post("/api/auth/login", json=body), 401)
    assert_limited(await client.post("/api/auth/login", json={"email": victim.email, "password": "guess-final"}))
    # The right password does not get through either: the limit is no oracle.
    assert_limited(await client.post("/api/auth/login", json={"email": victim.email, "password": PASSWORD}))


async def test_a_burst_of_parallel_guesses_gets_no_more_than_the_limit_through(
    gateway: Gateway, stranger: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = stranger
    victim = await gateway.user("burst")
    answers = await asyncio.gather(
        *(
            client.post("/api/auth/login", json={"email": victim.email, "password": f"burst-{i:04d}"})
            for i in range(PER_EMAIL + 6)
        )
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * PER_EMAIL + [429] * 6


async def test_guessing_across_many_accounts_from_one_address_is_cut_off(
    gateway: Gateway, stranger: tuple[httpx.AsyncClient, str]
) -> None:
    """Spraying one password over many e-mails: the per-address window. Its first 100 attempts are
    counted straight into Redis (each real one costs an argon2 run)."""
    client, address = stranger
    limiter = LoginLimiter(gateway.app.state.services.redis, gateway.app.state.settings.redis_prefix)
    await gateway.app.state.services.redis.set(limiter.ip_key(address), PER_IP, ex=WINDOW)
    fresh = await gateway.user("spray")
    assert_limited(await client.post("/api/auth/login", json={"email": fresh.email, "password": PASSWORD}))
    # Another address is not affected.
    answer = await gateway.client.post("/api/auth/login", json={"email": fresh.email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    gateway.client.cookies.clear()


async def test_a_unicode_lookalike_of_a_locked_address_is_refused_and_the_lock_holds(
    gateway: Gateway, stranger: tuple[httpx.AsyncClient, str]
) -> None:
    """The outside attack run's bypass: after ten failures on `admin…`, `admİn…` (U+0130) logged in,
    because the limiter counted Python's lower-case and the look-up matched Postgres' lower-case."""
    client, _ = stranger
    victim = await gateway.user("admin")
    assert victim.email.startswith("admin-")
    for attempt in range(PER_EMAIL):
        body = {"email": victim.email, "password": f"guess-{attempt:04d}"}
        assert_error(await client.post("/api/auth/login", json=body), 401)
    lookalike = victim.email.replace("admin", "adm\u0130n", 1)
    answer = await client.post("/api/auth/login", json={"email": lookalike, "password": PASSWORD})
    error = assert_error(answer, 400, "email")
    assert error["code"] == "invalid_input"
    assert "access_token" not in answer.text and "set-cookie" not in answer.headers
    assert_limited(await client.post("/api/auth/login", json={"email": victim.email, "password": PASSWORD}))
