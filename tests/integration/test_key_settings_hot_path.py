"""A key's settings steer its requests: spend caps are enforced by the hold, routing defaults by the
router (the request's own `provider` still wins), and a change applies at once on every process."""

from __future__ import annotations

import httpx
import orjson
import pytest

from aichat_gateway.config.settings import Settings
from tests.support.gateways import Gateways
from tests.support.market import Market, fund, register_and_login
from tests.support.processes import Proc
from tests.support.waiting import await_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MESSAGES = [{"role": "user", "content": "hello"}]


def key_with(gateway: Proc, settings: Settings, **key_settings: object) -> tuple[dict[str, str], str, str]:
    """A funded buyer's new key with these settings: (session headers, key id, key secret)."""
    account = register_and_login(gateway, "keyset", "key-settings-password")
    fund(settings, account.id, "5")
    body = {"name": "with settings", **key_settings}
    created = httpx.post(gateway.url + "/api/keys", json=body, headers=account.auth, timeout=10)
    assert created.status_code == 201, created.text
    return account.auth, created.json()["id"], created.json()["key"]


async def ask(gateway: Proc, key: str, model: str, **extra: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            gateway.base_url + "/chat/completions",
            content=orjson.dumps({"model": model, "messages": MESSAGES, **extra}),
            headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
        )


async def test_a_daily_spend_cap_below_the_worst_case_refuses_with_402(
    gateway: Proc, proxy_settings: Settings, market: Market
) -> None:
    _, _, key = key_with(gateway, proxy_settings, daily_spend_cap_usd="0.000010")
    answer = await ask(gateway, key, "gpt-4o-mini", max_tokens=1000)  # worst case ~0.0006 USD
    assert answer.status_code == 402
    error = answer.json()["error"]
    assert error["code"] == "insufficient_quota" and "daily spend cap" in error["message"]


async def test_a_monthly_cap_with_room_lets_requests_through(
    gateway: Proc, proxy_settings: Settings, market: Market
) -> None:
    _, _, key = key_with(gateway, proxy_settings, monthly_spend_cap_usd="1")
    assert (await ask(gateway, key, "gpt-4o-mini", max_tokens=100)).status_code == 200


async def test_routing_defaults_on_a_key_steer_its_requests(
    gateway: Proc, proxy_settings: Settings, market: Market
) -> None:
    bad = market.listings["failover-500-bad"]["public_id"]
    _, _, key = key_with(gateway, proxy_settings, routing={"ignore": [bad]})
    answer = await ask(gateway, key, "failover-500-model")
    assert answer.status_code == 200 and answer.headers["x-gateway-attempts"] == "1"


async def test_the_requests_own_provider_field_wins_over_the_keys_defaults(
    gateway: Proc, proxy_settings: Settings, market: Market
) -> None:
    good = market.listings["failover-500-good"]["public_id"]
    _, _, key = key_with(gateway, proxy_settings, routing={"only": [good]})
    bad = market.listings["failover-500-bad"]["public_id"]
    answer = await ask(gateway, key, "failover-500-model", provider={"only": [bad], "allow_fallbacks": False})
    assert answer.status_code == 502 and answer.headers["x-gateway-attempts"] == "1"


async def test_changing_a_keys_cap_applies_at_once_on_every_gateway(
    gateways: Gateways, proxy_settings: Settings, market: Market
) -> None:
    session, key_id, key = key_with(gateways.a, proxy_settings)
    assert (await ask(gateways.b, key, "gpt-4o-mini", max_tokens=1000)).status_code == 200  # cached on b
    async with httpx.AsyncClient(timeout=10) as client:
        changed = await client.patch(
            f"{gateways.a.url}/api/keys/{key_id}", json={"daily_spend_cap_usd": "0.000001"}, headers=session
        )
    assert changed.status_code == 200, changed.text

    async def refused_on_b() -> bool:
        return (await ask(gateways.b, key, "gpt-4o-mini", max_tokens=1000)).status_code == 402

    await await_until(refused_on_b, 2.0, "gateway b to apply the new cap")
