"""Circuit breaking across listings: a failing listing is cut off after the threshold, buyers never notice."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.fakes import Fakes
from tests.support.gateways import GatewayFactory
from tests.support.market import Market
from tests.support.processes import Proc
from tests.support.scratch import redis_prefix

FAIL_MAX = 3


@pytest.fixture(scope="module")
def breaking_gateway(gateway_factory: GatewayFactory, market: Market) -> Iterator[Proc]:
    # Breakers live in Redis and are shared by every gateway on the same prefix: this one gets a
    # prefix of its own, so the breakers it opens stay out of the other tests' way. A long reset
    # timeout: no half-open probe happens during the test.
    with redis_prefix("tbrk") as prefix:
        yield gateway_factory.start(
            "gateway-breaker",
            GATEWAY_REDIS_PREFIX=prefix,
            GATEWAY_BREAKER_FAIL_MAX=str(FAIL_MAX),
            GATEWAY_BREAKER_RESET_TIMEOUT="600",
        )


def ask(gateway: Proc, market: Market, model: str) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {market.buyer_key}"},
        timeout=10,
    )


def test_a_failing_listing_sees_only_the_threshold_while_every_buyer_request_succeeds(
    breaking_gateway: Proc, market: Market, fakes: Fakes
) -> None:
    # "failover-500-model": a cheap listing on the always-500 fake, a dearer one on the healthy fake.
    before = fakes.failing.stats()["requests"]
    answers = [ask(breaking_gateway, market, "failover-500-model") for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    assert fakes.failing.stats()["requests"] - before == FAIL_MAX
    assert answers[-1].headers["x-gateway-attempts"] == "1"  # the broken listing is no longer tried


def test_a_model_whose_only_listing_is_broken_answers_503_without_calling_it(
    breaking_gateway: Proc, market: Market, fakes: Fakes
) -> None:
    for _ in range(FAIL_MAX):
        ask(breaking_gateway, market, "failing-model")
    before = fakes.failing.stats()["requests"]
    answer = ask(breaking_gateway, market, "failing-model")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "service_unavailable"
    assert fakes.failing.stats()["requests"] == before
