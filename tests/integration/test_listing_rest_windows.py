"""Listings that are full or told to wait rest until then, and come back by themselves.

The app runs in this process on an injected clock, so "a minute later" is one assignment, not a
minute of waiting; Redis, Postgres and the fake providers are real.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from aichat_gateway.billing.credits import grant_credit
from aichat_gateway.config.settings import Settings
from aichat_gateway.server.app import create_app
from tests.support.app import replace_services
from tests.support.fakes import Fakes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PASSWORD = "rest-window-password"
MESSAGES = [{"role": "user", "content": "hi"}]


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_040.0  # 20 s into a UTC minute

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def clocked_app(settings: Settings, clock: Clock) -> AsyncIterator[Starlette]:
    app = create_app(settings, configure_logs=False, clock=clock)
    async with app.router.lifespan_context(app):

        async def accept(provider: str, base_url: str, api_key: str) -> None:
            return None

        replace_services(app, key_checker=accept)
        yield app


@pytest.fixture
async def client(clocked_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=clocked_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=20) as c:
        yield c


async def session(client: httpx.AsyncClient, tag: str) -> dict[str, str]:
    email = f"{tag}-{uuid.uuid4().hex[:10]}@example.com"
    assert (await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})).status_code == 201
    token = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"authorization": f"Bearer {token['access_token']}"}


async def list_endpoint(client: httpx.AsyncClient, seller: dict[str, str], base_url: str, **extra: Any) -> Any:
    body = {
        "name": "endpoint",
        "provider": "openai",
        "base_url": base_url,
        "api_key": "sk-provider-" + secrets.token_hex(12),
        "models": [{"model": "gpt-4o-mini"}],
        "pricing": {"multiplier": "1"},
        "attest_resale": True,
        **extra,
    }
    answer = await client.post("/api/marketplace/listings", json=body, headers=seller)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def buyer_key(client: httpx.AsyncClient) -> dict[str, str]:
    buyer = await session(client, "buyer")
    me = (await client.get("/api/auth/me", headers=buyer)).json()
    state = client._transport.app.state.services  # type: ignore[attr-defined]
    await grant_credit(
        state.db,
        user_id=me["id"],
        amount_micro=10_000_000,
        reason="test funds",
        granted_by=None,
        idempotency_key=None,
        on_balance_change=state.hot.credit,
    )
    key = (await client.post("/api/keys", json={"name": "k"}, headers=buyer)).json()["key"]
    return {"authorization": f"Bearer {key}"}


async def ask(client: httpx.AsyncClient, key: dict[str, str], only: list[dict[str, Any]]) -> httpx.Response:
    """Routed to the test's own listings only: the session's database holds other tests' listings."""
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "provider": {"only": [x["public_id"] for x in only]}}
    return await client.post("/v1/chat/completions", json=body, headers=key)


async def test_a_listing_at_its_rpm_cap_comes_back_by_itself_when_the_minute_turns(
    client: httpx.AsyncClient, clock: Clock, fakes: Fakes
) -> None:
    seller = await session(client, "seller")
    listing = await list_endpoint(client, seller, fakes.main.base_url, limits={"rpm": 2})
    key = await buyer_key(client)
    assert [(await ask(client, key, [listing])).status_code for _ in range(2)] == [200, 200]
    refused = await ask(client, key, [listing])
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 40  # the minute ends 40 s after "now"
    shown = (await client.get(f"/api/marketplace/listings/{listing['id']}", headers=seller)).json()
    assert shown["status"] == "exhausted" and "rpm" in shown["status_reason"]

    clock.now += 41  # into the next minute: nothing else happens, no one resets anything
    answer = await ask(client, key, [listing])
    assert answer.status_code == 200
    assert answer.headers["x-gateway-listing"] == listing["public_id"]
    shown = (await client.get(f"/api/marketplace/listings/{listing['id']}", headers=seller)).json()
    assert shown["status"] == "active"


async def test_a_provider_429_retry_after_rests_the_listing_for_exactly_that_long(
    client: httpx.AsyncClient, clock: Clock, fakes: Fakes
) -> None:
    """The busy fake answers every request 429 with Retry-After: 7; a dearer listing answers."""
    seller = await session(client, "seller")
    busy = await list_endpoint(client, seller, fakes.busy.base_url, pricing={"multiplier": "0.5"})
    main = await list_endpoint(client, seller, fakes.main.base_url, pricing={"multiplier": "2"})
    key = await buyer_key(client)
    before = fakes.busy.stats()["requests"]

    first = await ask(client, key, [busy, main])
    assert first.status_code == 200 and first.headers["x-gateway-attempts"] == "2"
    assert fakes.busy.stats()["requests"] == before + 1
    shown = (await client.get(f"/api/marketplace/listings/{busy['id']}", headers=seller)).json()
    assert shown["status"] == "cooling" and "retry" in shown["status_reason"].lower()

    clock.now += 6  # still resting: the busy listing is not asked again
    resting = await ask(client, key, [busy, main])
    assert resting.status_code == 200 and resting.headers["x-gateway-attempts"] == "1"
    assert fakes.busy.stats()["requests"] == before + 1

    clock.now += 2  # past the 7 s it asked for: tried again (and fails over again)
    again = await ask(client, key, [busy, main])
    assert again.status_code == 200 and again.headers["x-gateway-attempts"] == "2"
    assert fakes.busy.stats()["requests"] == before + 2
