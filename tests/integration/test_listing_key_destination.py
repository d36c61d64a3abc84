"""A seller's stored provider key is only ever sent to the URL it was listed with (issue 12, point 5).

The gateway checks a listing's key with its provider when it is listed or re-keyed (the real
`check_provider_key` over the app's upstream client here, not a stand-in). Two recording
providers on 127.0.0.1: the seller's, which accepts the seller's keys, and an attacker's, which
records every request and answers 200 to anything, as a server built to harvest keys would.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

PASSWORD = "key-destination-password"


@dataclass
class Recorder:
    """A provider on 127.0.0.1 that records (method, path, authorization) of every request."""

    accepted_keys: set[str] | None  # None: answers 200 to anything
    seen: list[tuple[str, str, str]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        authorization = request.headers.get("authorization", "")
        self.seen.append((request.method, request.path, authorization))
        key = authorization.removeprefix("Bearer ")
        if self.accepted_keys is not None and key not in self.accepted_keys:
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        return web.json_response({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model"}]})

    def keys_seen(self) -> list[str]:
        return [authorization.removeprefix("Bearer ") for _, _, authorization in self.seen]


async def serve(recorder: Recorder) -> web.AppRunner:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    recorder.url = f"http://127.0.0.1:{port}/v1"
    return runner


@pytest.fixture
async def providers() -> AsyncIterator[tuple[Recorder, Recorder]]:
    seller, attacker = Recorder(accepted_keys=set()), Recorder(accepted_keys=None)
    runners = [await serve(seller), await serve(attacker)]
    try:
        yield seller, attacker
    finally:
        for runner in runners:
            await runner.cleanup()


@dataclass(frozen=True)
class Account:
    id: str
    auth: dict[str, str]


async def account(client: httpx.AsyncClient, db: asyncpg.Connection, role: str = "user") -> Account:
    email = f"keydest-{uuid.uuid4().hex[:10]}@example.com"
    registered = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    user_id = registered.json()["id"]
    if role != "user":  # the role is in the session token: set it before logging in
        await db.execute("UPDATE users SET role = $2 WHERE id = $1", uuid.UUID(user_id), role)
    token = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()
    client.cookies.clear()  # bearer only: a session cookie without its CSRF token would be refused
    return Account(user_id, {"authorization": f"Bearer {token['access_token']}"})


async def listed(client: httpx.AsyncClient, seller: Account, provider: Recorder) -> tuple[str, str]:
    """A listing on the seller's provider; returns (listing path, its key)."""
    key = "sk-seller-" + secrets.token_hex(12)
    assert provider.accepted_keys is not None
    provider.accepted_keys.add(key)
    body = {
        "name": "mine",
        "provider": "openai",
        "base_url": provider.url,
        "api_key": key,
        "models": [{"model": "gpt-4o-mini"}],
        "pricing": {"multiplier": "1"},
        "attest_resale": True,
    }
    created = await client.post("/api/marketplace/listings", json=body, headers=seller.auth)
    assert created.status_code == 201, created.text
    provider.seen.clear()
    return f"/api/marketplace/listings/{created.json()['id']}", key


def error_of(answer: httpx.Response, status: int) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def test_an_admin_cannot_point_a_sellers_listing_elsewhere_and_the_key_never_leaves(
    client: httpx.AsyncClient, db: asyncpg.Connection, providers: tuple[Recorder, Recorder]
) -> None:
    seller_provider, attacker = providers
    seller, admin = await account(client, db), await account(client, db, role="admin")
    path, key = await listed(client, seller, seller_provider)
    answer = await client.patch(path, json={"base_url": attacker.url}, headers=admin.auth)
    assert error_of(answer, 400)["param"] == "base_url"
    assert attacker.seen == []
    assert seller_provider.seen == []
    assert key not in answer.text
    assert (await client.get(path, headers=seller.auth)).json()["base_url"] == seller_provider.url


async def test_an_admin_cannot_re_key_a_sellers_listing_either(
    client: httpx.AsyncClient, db: asyncpg.Connection, providers: tuple[Recorder, Recorder]
) -> None:
    seller_provider, attacker = providers
    seller, admin = await account(client, db), await account(client, db, role="admin")
    path, key = await listed(client, seller, seller_provider)
    for body in ({"api_key": "sk-admin-" + secrets.token_hex(8)}, {"base_url": attacker.url, "api_key": "sk-x" * 5}):
        answer = await client.patch(path, json=body, headers=admin.auth)
        assert error_of(answer, 400)["param"] in ("base_url", "api_key")
    assert attacker.seen == [] and seller_provider.seen == []
    shown = (await client.get(path, headers=seller.auth)).json()
    assert (shown["base_url"], shown["key_last4"]) == (seller_provider.url, "…" + key[-4:])


async def test_an_admin_may_still_pause_disable_and_give_a_reason(
    client: httpx.AsyncClient, db: asyncpg.Connection, providers: tuple[Recorder, Recorder]
) -> None:
    seller_provider, _ = providers
    seller, admin = await account(client, db), await account(client, db, role="admin")
    path, _ = await listed(client, seller, seller_provider)
    paused = await client.patch(path, json={"status": "paused"}, headers=admin.auth)
    assert paused.status_code == 200, paused.text
    disabled = await client.patch(path, json={"status": "disabled", "status_reason": "abuse"}, headers=admin.auth)
    assert (disabled.json()["status"], disabled.json()["status_reason"]) == ("disabled", "abuse")
    assert seller_provider.seen == []


async def test_a_seller_changing_base_url_without_api_key_is_refused_naming_api_key_and_nothing_is_sent(
    client: httpx.AsyncClient, db: asyncpg.Connection, providers: tuple[Recorder, Recorder]
) -> None:
    seller_provider, elsewhere = providers
    seller = await account(client, db)
    path, _ = await listed(client, seller, seller_provider)
    answer = await client.patch(path, json={"base_url": elsewhere.url}, headers=seller.auth)
    assert error_of(answer, 400)["param"] == "api_key"
    assert elsewhere.seen == [] and seller_provider.seen == []
    assert (await client.get(path, headers=seller.auth)).json()["base_url"] == seller_provider.url


async def test_a_seller_moving_a_listing_with_a_new_key_has_only_the_new_key_checked_at_the_new_url(
    client: httpx.AsyncClient, db: asyncpg.Connection, providers: tuple[Recorder, Recorder]
) -> None:
    old_provider, new_provider = providers
    seller = await account(client, db)
    path, old_key = await listed(client, seller, old_provider)
    new_key = "sk-moved-" + secrets.token_hex(12)
    answer = await client.patch(path, json={"base_url": new_provider.url, "api_key": new_key}, headers=seller.auth)
    assert answer.status_code == 200, answer.text
    assert new_provider.keys_seen() == [new_key]
    assert [(method, p) for method, p, _ in new_provider.seen] == [("GET", "/v1/models")]
    assert old_provider.seen == []
    assert old_key not in new_provider.keys_seen()
    assert (answer.json()["base_url"], answer.json()["key_last4"]) == (new_provider.url, "…" + new_key[-4:])


async def test_a_seller_re_keying_in_place_has_the_new_key_checked_at_the_listings_own_url(
    client: httpx.AsyncClient, db: asyncpg.Connection, providers: tuple[Recorder, Recorder]
) -> None:
    seller_provider, elsewhere = providers
    seller = await account(client, db)
    path, _ = await listed(client, seller, seller_provider)
    new_key = "sk-rotated-" + secrets.token_hex(12)
    assert seller_provider.accepted_keys is not None
    seller_provider.accepted_keys.add(new_key)
    answer = await client.patch(path, json={"api_key": new_key}, headers=seller.auth)
    assert answer.status_code == 200, answer.text
    assert seller_provider.keys_seen() == [new_key]
    assert elsewhere.seen == []
    assert answer.json()["base_url"] == seller_provider.url
