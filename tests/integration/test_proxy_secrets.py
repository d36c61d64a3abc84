"""Secrets (gateway keys, provider keys, passwords, session tokens) never reach a log line or an API
answer; the only exception is the one-time answer that creates a gateway key."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.fakes import FakeUpstream
from tests.support.gateways import GatewayFactory, Gateways
from tests.support.market import EXPLICIT_PRICE, Market, create_listing, provider_key
from tests.support.processes import Proc

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hello"}]


def secrets_of(market: Market) -> dict[str, str]:
    found = {
        "buyer gateway key": market.buyer_key,
        "seller password": market.seller.password,
        "buyer password": market.buyer.password,
        "seller session token": market.seller.token,
        "buyer session token": market.buyer.token,
    }
    found |= {f"provider key of {name}": key for name, key in market.provider_keys.items()}
    found |= {f"extra gateway key {i}": key for i, key in enumerate(market.created_key_secrets)}
    return found


def assert_no_secret(text: str, market: Market, where: str) -> None:
    for name, secret in secrets_of(market).items():
        assert secret not in text, f"the {name} appears in {where}"


def answer_text(answer: httpx.Response) -> str:
    headers = "\n".join(f"{k}: {v}" for k, v in answer.headers.items())
    return headers + "\n\n" + answer.text


@pytest.fixture(scope="module")
def exercised(gateways: Gateways, market: Market, fake_upstream: FakeUpstream) -> Iterator[list[httpx.Response]]:
    """Drive every path that handles a secret, keeping each answer for inspection."""
    a = gateways.a
    buyer = {"Authorization": f"Bearer {market.buyer_key}"}
    answers: list[httpx.Response] = []
    with httpx.Client(base_url=a.url, timeout=10) as http:
        # A listing is created with a fresh provider key, then the same key is listed again (409).
        key = provider_key()
        market.provider_keys["secrets-test"] = key
        body = {
            "name": "secrets test",
            "provider": "openai",
            "base_url": fake_upstream.base_url,
            "api_key": key,
            "models": [{"model": "secret-model", "upstream_model": "gpt-4o-mini"}],
            "pricing": EXPLICIT_PRICE,
            "attest_resale": True,
        }
        created = create_listing(a, market.seller, body)
        answers.append(http.post("/api/marketplace/listings", json=body, headers=market.seller.auth))
        answers.append(http.get("/api/marketplace/listings", headers=market.seller.auth))
        answers.append(http.get(f"/api/marketplace/listings/{created['id']}", headers=market.seller.auth))
        answers.append(http.get("/api/keys", headers=market.buyer.auth))
        # Logins: a right one, a wrong password, and one with the other account's password.
        answers.append(
            http.post("/api/auth/login", json={"email": market.buyer.email, "password": market.buyer.password})
        )
        answers.append(
            http.post("/api/auth/login", json={"email": market.buyer.email, "password": market.seller.password})
        )
        answers.append(http.get("/api/auth/me", headers=market.buyer.auth))
        # The hot path: success, stream, provider failure, connect failure, and a key sent as junk.
        chat = {"model": "gpt-4o-mini", "messages": MESSAGES}
        answers.append(http.post("/v1/chat/completions", json=chat, headers=buyer))
        answers.append(http.post("/v1/chat/completions", json={**chat, "stream": True}, headers=buyer))
        answers.append(http.post("/v1/chat/completions", json={**chat, "model": "failing-model"}, headers=buyer))
        answers.append(http.post("/v1/chat/completions", json={**chat, "model": "dead-model"}, headers=buyer))
        answers.append(http.post("/v1/chat/completions", json={**chat, "model": "secret-model"}, headers=buyer))
        answers.append(
            http.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {market.buyer_key}x"})
        )
        answers.append(http.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}))
        # A key pasted into the model field is echoed to its own sender (as OpenAI does), so only
        # the logs are checked for this one.
        assert (
            http.post("/v1/chat/completions", json={**chat, "model": market.buyer_key}, headers=buyer).status_code
            == 404
        )
        answers.append(http.get("/v1/models", headers=buyer))
        answers.append(http.get("/metrics"))
        answers.append(http.get("/readyz"))
    yield answers


def test_no_api_answer_shows_a_secret(exercised: list[httpx.Response], market: Market) -> None:
    assert len(exercised) > 10
    for answer in exercised:
        assert_no_secret(answer_text(answer), market, f"the answer to {answer.request.method} {answer.request.url}")


def test_a_listing_shows_only_the_last_four_characters_of_its_provider_key(
    gateway: Proc, market: Market, exercised: list[httpx.Response]
) -> None:
    listed = httpx.get(gateway.url + "/api/marketplace/listings", headers=market.seller.auth, timeout=10)
    assert listed.status_code == 200
    by_id = {item["id"]: item for item in listed.json()["data"]}
    for name, created in market.listings.items():
        item = by_id[created["id"]]
        key = market.provider_keys[name]
        assert item["key_last4"] == "…" + key[-4:]
        assert created["key_last4"] == "…" + key[-4:]
        assert "api_key" not in item and key not in listed.text


def test_a_listing_with_an_already_listed_key_is_refused_without_echoing_the_key(
    market: Market, exercised: list[httpx.Response]
) -> None:
    duplicate = exercised[0]
    assert duplicate.status_code == 409, duplicate.text
    assert duplicate.json()["error"]["code"] == "duplicate_key"
    assert market.provider_keys["secrets-test"] not in duplicate.text


def test_the_key_list_never_shows_a_key_but_creation_shows_it_once(gateway: Proc, market: Market) -> None:
    created = httpx.post(gateway.url + "/api/keys", json={"name": "shown-once"}, headers=market.buyer.auth, timeout=10)
    assert created.status_code == 201
    secret = created.json()["key"]
    market.created_key_secrets.append(secret)
    assert secret.startswith("agw-") and created.json()["prefix"] == secret[:12]
    listed = httpx.get(gateway.url + "/api/keys", headers=market.buyer.auth, timeout=10)
    assert listed.status_code == 200
    assert secret not in listed.text and market.buyer_key not in listed.text
    assert all("key" not in entry for entry in listed.json()["data"])


def test_the_provider_receives_the_sellers_key_not_the_buyers(
    gateway: Proc, fake_upstream: FakeUpstream, market: Market
) -> None:
    """The fake shows only the last four characters of the authorization header it got."""
    answer = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {market.buyer_key}"},
        timeout=10,
    )
    assert answer.status_code == 200
    headers = fake_upstream.stats()["last_request"]["headers"]
    assert headers["authorization"] == market.provider_keys["main"][-4:]
    assert not any(name.startswith("x-gateway") for name in headers)


def test_no_gateway_log_shows_a_secret(
    gateway_factory: GatewayFactory, market: Market, exercised: list[httpx.Response]
) -> None:
    assert gateway_factory.gateways, "no gateway was started"
    for proc in gateway_factory.gateways:
        logs = proc.logs()
        assert logs.strip(), f"{proc.name} wrote no log at all"
        assert_no_secret(logs, market, f"the log of {proc.name} ({proc.log_path})")
