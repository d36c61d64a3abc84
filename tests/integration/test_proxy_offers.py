"""Public offers: prices and the last hour's observed performance, and nothing that identifies a seller."""

from __future__ import annotations

import httpx

from tests.support.market import Market
from tests.support.processes import Proc


def chat(gateway: Proc, market: Market, model: str) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": f"Bearer {market.buyer_key}"},
        timeout=10,
    )


def test_served_requests_show_up_in_the_offer_of_their_listing(gateway: Proc, market: Market) -> None:
    for _ in range(3):
        assert chat(gateway, market, "gpt-4o-mini").status_code == 200
    answer = httpx.get(gateway.url + "/api/marketplace/offers", params={"model": "gpt-4o-mini"}, timeout=10)
    assert answer.status_code == 200
    [offer] = [o for o in answer.json()["data"] if o["offer_id"] == market.listings["main"]["public_id"]]
    assert offer["last_hour"]["requests"] >= 3
    assert 0 < offer["last_hour"]["success_rate"] <= 1  # other tests' disconnects count against it
    assert offer["last_hour"]["p50_latency_ms"] is not None
    assert offer["input_usd_per_million"] == "0.150000"  # gpt-4o-mini's list price, multiplier 1


def test_failures_lower_the_success_rate(gateway: Proc, market: Market) -> None:
    assert chat(gateway, market, "failing-model").status_code == 502
    answer = httpx.get(gateway.url + "/api/marketplace/offers", params={"model": "failing-model"}, timeout=10)
    [offer] = answer.json()["data"]
    assert offer["last_hour"]["success_rate"] < 1.0


def test_offers_name_no_key_url_or_seller(gateway: Proc, market: Market) -> None:
    text = httpx.get(gateway.url + "/api/marketplace/offers", timeout=10).text
    for secret in market.provider_keys.values():
        assert secret not in text
    assert market.seller.email not in text
    assert "127.0.0.1" not in text
    assert market.listings["main"]["id"] not in text
