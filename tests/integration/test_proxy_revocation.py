"""Revoking a key on one gateway process stops it on every other process within a second."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.calls import assert_openai_error
from tests.support.gateways import Gateways
from tests.support.market import Market
from tests.support.processes import Proc

pytestmark = pytest.mark.integration

LIMIT_SECONDS = 1.0


async def status_on(client: httpx.AsyncClient, gateway: Proc, key: str) -> int:
    answer = await client.get(gateway.base_url + "/models", headers={"Authorization": f"Bearer {key}"})
    return answer.status_code


async def seconds_until_refused(client: httpx.AsyncClient, gateway: Proc, key: str, since: float) -> float:
    """Poll until the gateway refuses the key; the time it took, failing at twice the limit."""
    while (status := await status_on(client, gateway, key)) == 200:
        assert time.monotonic() - since < 2 * LIMIT_SECONDS, f"{gateway.name} still serves the revoked key"
    assert status == 401
    return time.monotonic() - since


@pytest.mark.parametrize("revoke_on, check_on", [("a", "b"), ("b", "a")])
async def test_a_key_revoked_on_one_gateway_is_refused_by_the_other_within_a_second(
    gateways: Gateways, market: Market, revoke_on: str, check_on: str
) -> None:
    revoker: Proc = getattr(gateways, revoke_on)
    other: Proc = getattr(gateways, check_on)
    key_id, key = market.new_key(revoker, f"revoke-on-{revoke_on}")
    async with httpx.AsyncClient(timeout=5) as client:
        # Both processes serve the key, so both hold it in their caches.
        for gateway in (revoker, other):
            assert await status_on(client, gateway, key) == 200
            assert await status_on(client, gateway, key) == 200
        assert market.revoke(revoker, key_id).status_code == 204
        revoked_at = time.monotonic()
        elapsed = await seconds_until_refused(client, other, key, revoked_at)
        answer = await client.post(
            other.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]},
        )
    assert elapsed < LIMIT_SECONDS, f"{other.name} served the key {elapsed:.3f}s after the revocation"
    assert_openai_error(answer, 401, "invalid_api_key")


def test_a_revoked_key_shows_its_revocation_time_in_the_key_list(gateway: Proc, market: Market) -> None:
    key_id, _ = market.new_key(gateway, "listed-revoked")
    assert market.revoke(gateway, key_id).status_code == 204
    listed = httpx.get(gateway.url + "/api/keys", headers=market.buyer.auth, timeout=5)
    [entry] = [k for k in listed.json()["data"] if k["id"] == key_id]
    assert entry["revoked_at"] is not None


async def test_revoking_a_key_twice_is_idempotent_and_the_other_key_keeps_working(
    gateways: Gateways, market: Market
) -> None:
    key_id, key = market.new_key(gateways.a, "twice")
    assert market.revoke(gateways.a, key_id).status_code == 204
    assert market.revoke(gateways.b, key_id).status_code == 204
    async with httpx.AsyncClient(timeout=5) as client:
        assert await status_on(client, gateways.a, key) == 401
        assert await status_on(client, gateways.b, market.buyer_key) == 200
