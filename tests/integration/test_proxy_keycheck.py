"""A listed key is checked with the provider before the listing is accepted (GET {base_url}/models)."""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from tests.support.fakes import KEYED_FAKE_KEY, Fakes
from tests.support.gateways import GatewayFactory
from tests.support.market import PASSWORD_SELLER, Account, register_and_login
from tests.support.ports import free_port
from tests.support.processes import Proc


@pytest.fixture(scope="module")
def checking_gateway(gateway_factory: GatewayFactory) -> Proc:
    return gateway_factory.start("gateway-keycheck", GATEWAY_CHECK_LISTING_KEYS="1")


@pytest.fixture(scope="module")
def seller(checking_gateway: Proc) -> Account:
    return register_and_login(checking_gateway, "keycheck-seller", PASSWORD_SELLER)


def offer(base_url: str, api_key: str) -> dict[str, Any]:
    return {
        "name": "keycheck",
        "provider": "openai",
        "base_url": base_url,
        "api_key": api_key,
        "models": [{"model": "keycheck-model"}],
        "pricing": {"input_usd_per_million": "1", "output_usd_per_million": "1"},
        "attest_resale": True,
    }


def post(gateway: Proc, seller: Account, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(gateway.url + "/api/marketplace/listings", json=body, headers=seller.auth, timeout=10)


def test_a_key_the_provider_accepts_is_listed(checking_gateway: Proc, seller: Account, fakes: Fakes) -> None:
    answer = post(checking_gateway, seller, offer(fakes.keyed.base_url, KEYED_FAKE_KEY))
    assert answer.status_code == 201, answer.text


def test_a_key_the_provider_rejects_is_refused_naming_the_key(
    checking_gateway: Proc, seller: Account, fakes: Fakes
) -> None:
    wrong = "sk-wrong-" + secrets.token_hex(8)
    answer = post(checking_gateway, seller, offer(fakes.keyed.base_url, wrong))
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["param"]) == ("upstream_refused", "api_key")
    assert wrong not in answer.text


def test_an_upstream_that_does_not_answer_is_refused_naming_the_url(checking_gateway: Proc, seller: Account) -> None:
    answer = post(
        checking_gateway, seller, offer(f"http://127.0.0.1:{free_port()}/v1", "sk-any-" + secrets.token_hex(8))
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "base_url"


def test_a_url_without_the_openai_api_is_refused(checking_gateway: Proc, seller: Account, fakes: Fakes) -> None:
    answer = post(checking_gateway, seller, offer(fakes.keyed.url + "/not-an-api", KEYED_FAKE_KEY))
    assert answer.status_code == 400
    assert (answer.json()["error"]["code"], answer.json()["error"]["param"]) == ("upstream_refused", "base_url")
