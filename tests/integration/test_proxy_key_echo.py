"""A provider that quotes the key it was sent, in a format no pattern knows (Groq's `gsk_…` here):
the buyer never sees it, in a plain error, a streamed error event or a header, and no log shows it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.support.fakes import spawn_fake
from tests.support.gateways import GatewayFactory
from tests.support.market import EXPLICIT_PRICE, Market, create_listing, wait_for_models
from tests.support.processes import Proc, Processes

pytestmark = pytest.mark.integration

MODEL = "echo-model"
MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def echoed_key(processes: Processes, gateway: Proc, market: Market) -> Iterator[str]:
    """A listing whose provider quotes its key back; the key looks like no pattern the masker knows."""
    fake = spawn_fake(processes, "fake-echo", "--echo-key")
    fake.wait_healthy()
    key = "zq" + secrets.token_hex(20)  # an unknown provider's key format
    create_listing(
        gateway,
        market.seller,
        {
            "name": "echoes its key",
            "provider": "openai",
            "base_url": fake.base_url,
            "api_key": key,
            "models": [{"model": MODEL, "upstream_model": "gpt-4o-mini"}],
            "pricing": EXPLICIT_PRICE,
            "attest_resale": True,
        },
    )
    wait_for_models(gateway, market.buyer_key, [MODEL])
    yield key
    processes.close(only=[fake])


def ask(gateway: Proc, market: Market, stream: bool) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": MODEL, "messages": MESSAGES, "stream": stream},
        headers={"Authorization": f"Bearer {market.buyer_key}"},
        timeout=10,
    )


def everything(answer: httpx.Response) -> str:
    return "\n".join(f"{k}: {v}" for k, v in answer.headers.items()) + "\n\n" + answer.text


def test_a_providers_error_quoting_the_routes_key_reaches_the_buyer_with_the_key_masked(
    gateway: Proc, market: Market, echoed_key: str
) -> None:
    answer = ask(gateway, market, stream=False)
    assert answer.status_code == 400
    assert echoed_key not in everything(answer)
    assert "[redacted]" in answer.json()["error"]["message"]


def test_a_streamed_error_event_quoting_the_routes_key_reaches_the_buyer_with_the_key_masked(
    gateway: Proc, market: Market, echoed_key: str
) -> None:
    answer = ask(gateway, market, stream=True)
    assert answer.status_code == 200
    assert echoed_key not in everything(answer)
    assert "[redacted]" in answer.text


def test_no_gateway_log_shows_the_echoed_key(
    gateway_factory: GatewayFactory, gateway: Proc, market: Market, echoed_key: str
) -> None:
    ask(gateway, market, stream=False)
    ask(gateway, market, stream=True)
    for proc in gateway_factory.gateways:
        assert echoed_key not in proc.logs(), f"{proc.name}'s log shows the provider key"
