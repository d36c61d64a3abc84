"""Look-alike e-mail addresses (Unicode that Python and Postgres fold differently) at every door that
takes an e-mail: refused with 400 `param: email` before anything is counted or looked up, with one
answer whether or not an account exists, so a refusal can neither log in, credit, nor probe anyone."""

from __future__ import annotations

import httpx
import pytest

from aichat_gateway.accounts.loginlimit import LoginLimiter
from tests.support.attack import PASSWORD, Gateway, assert_error, unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

# (what the attacker types in place of a plain letter, which letter it stands for)
LOOKALIKES = [
    ("\u0130", "i"),  # İ: Postgres lower() gives "i"
    ("\u0131", "i"),  # dotless i: upper() gives "I"
    ("\u212a", "k"),  # Kelvin sign: lower() gives "k"
    ("\uff4b", "k"),  # fullwidth k
    ("k\u0301", "k"),  # k with a combining accent
]


def spoof(email: str, letter: str, lookalike: str) -> str:
    assert letter in email.split("@")[0], (letter, email)
    return email.replace(letter, lookalike, 1)


@pytest.mark.parametrize("lookalike, letter", LOOKALIKES)
async def test_a_lookalike_of_a_real_address_with_its_password_is_400_not_a_login(
    gateway: Gateway, stranger: tuple[httpx.AsyncClient, str], lookalike: str, letter: str
) -> None:
    client, _ = stranger
    victim = await gateway.user("kim")
    answer = await client.post(
        "/api/auth/login", json={"email": spoof(victim.email, letter, lookalike), "password": PASSWORD}
    )
    assert_error(answer, 400, "email")
    assert "access_token" not in answer.text and "set-cookie" not in answer.headers


async def test_a_refused_address_answers_alike_for_accounts_that_exist_and_that_do_not(
    gateway: Gateway, stranger: tuple[httpx.AsyncClient, str]
) -> None:
    client, _ = stranger
    real = await gateway.user("kim")
    answers = [
        await client.post("/api/auth/login", json={"email": spoof(email, "k", "\u212a"), "password": PASSWORD})
        for email in (real.email, unique_email("kim"))
    ]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json() == answers[1].json()


async def test_refused_addresses_are_not_counted_against_the_address_or_the_client(
    gateway: Gateway, stranger: tuple[httpx.AsyncClient, str]
) -> None:
    client, address = stranger
    victim = await gateway.user("kim")
    for _ in range(3):
        body = {"email": spoof(victim.email, "i", "\u0130"), "password": "whatever-long"}
        assert_error(await client.post("/api/auth/login", json=body), 400, "email")
    limiter = LoginLimiter(gateway.app.state.services.redis, gateway.app.state.settings.redis_prefix)
    assert await gateway.app.state.services.redis.exists(limiter.ip_key(address), limiter.email_key(victim.email)) == 0


@pytest.mark.parametrize("lookalike, letter", LOOKALIKES)
async def test_an_admin_credit_for_a_lookalike_address_is_400_and_credits_nobody(
    gateway: Gateway, lookalike: str, letter: str
) -> None:
    admin, buyer = await gateway.admin(), await gateway.user("kim")
    body = {"email": spoof(buyer.email, letter, lookalike), "amount_usd": "5", "reason": "lookalike"}
    assert_error(await gateway.client.post("/api/admin/credits", json=body, headers=admin.auth), 400, "email")
    balance = await gateway.client.get("/api/billing/balance", headers=buyer.auth)
    assert balance.json()["balance_usd"] == "0.000000"


async def test_registering_a_lookalike_of_a_taken_address_is_400(gateway: Gateway) -> None:
    taken = await gateway.user("kim")
    body = {"email": spoof(taken.email, "i", "\u0130"), "password": PASSWORD}
    assert_error(await gateway.client.post("/api/auth/register", json=body), 400, "email")
