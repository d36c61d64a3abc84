"""A listing whose key the provider rejects stops being used at once, and its seller is told why."""

from __future__ import annotations

import httpx

from tests.support.fakes import Fakes
from tests.support.gateways import Gateways
from tests.support.market import Market
from tests.support.processes import Proc
from tests.support.waiting import wait_until


def ask(gateway: Proc, market: Market) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": "invalid-key-model", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {market.buyer_key}"},
        timeout=10,
    )


def test_a_rejected_key_invalidates_the_listing_everywhere_and_the_buyer_is_served(
    gateways: Gateways, market: Market, fakes: Fakes
) -> None:
    first = ask(gateways.a, market)
    assert first.status_code == 200
    assert first.headers["x-gateway-attempts"] == "2"  # the rejected listing, then the good one
    listing = market.listings["invalid-key-bad"]
    seen = httpx.get(
        gateways.a.url + f"/api/marketplace/listings/{listing['id']}", headers=market.seller.auth, timeout=10
    ).json()
    assert seen["status"] == "invalid"
    assert "HTTP 401" in seen["status_reason"]

    before = fakes.keyed.stats()["requests"]

    def other_gateway_skips_it() -> bool:
        answer = ask(gateways.b, market)
        return answer.status_code == 200 and answer.headers["x-gateway-attempts"] == "1"

    wait_until(other_gateway_skips_it, 2.0, "gateway B to stop using the invalid listing")
    assert ask(gateways.a, market).headers["x-gateway-attempts"] == "1"
    assert fakes.keyed.stats()["requests"] == before
