"""The seller's listings API: validation, owner scoping, secrecy of the provider key, SSRF rules."""

from __future__ import annotations

import secrets
import uuid
from typing import Any

import httpx
import pytest

from tests.support.app import replace_services

PASSWORD = "listing-test-password"


@pytest.fixture(autouse=True)
def accept_every_key(app: Any) -> list[tuple[str, str, str]]:
    """These tests are about the API, not the provider: the key check (tested against a real fake
    provider in test_keycheck.py) is replaced by one that accepts and records."""
    checked: list[tuple[str, str, str]] = []

    async def checker(provider: str, base_url: str, api_key: str) -> None:
        checked.append((provider, base_url, api_key))

    replace_services(app, key_checker=checker)
    return checked


async def login(client: httpx.AsyncClient) -> dict[str, str]:
    email = f"seller-{uuid.uuid4().hex[:10]}@example.com"
    assert (await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})).status_code == 201
    token = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"authorization": f"Bearer {token['access_token']}"}


def listing(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "my endpoint",
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "sk-provider-" + secrets.token_hex(12),
        "models": [{"model": "gpt-4o-mini"}, {"model": "gpt-4o", "upstream_model": "gpt-4o-2024-08-06"}],
        "pricing": {"multiplier": "0.8"},
        "attest_resale": True,
    }
    body.update(overrides)
    return body


async def count_listings(db: Any) -> int:
    return int(await db.fetchval("SELECT count(*) FROM listings"))


async def test_a_seller_creates_a_listing_and_sees_only_the_last_four_of_its_key(client: httpx.AsyncClient) -> None:
    headers = await login(client)
    body = listing()
    created = await client.post("/api/marketplace/listings", json=body, headers=headers)
    assert created.status_code == 201
    data = created.json()
    assert data["status"] == "active"
    assert data["key_last4"] == "…" + body["api_key"][-4:]
    assert body["api_key"] not in created.text
    assert data["models"] == [
        {"model": "gpt-4o", "upstream_model": "gpt-4o-2024-08-06"},
        {"model": "gpt-4o-mini", "upstream_model": "gpt-4o-mini"},
    ]
    listed = await client.get("/api/marketplace/listings", headers=headers)
    assert [item["id"] for item in listed.json()["data"]] == [data["id"]]
    assert body["api_key"] not in listed.text


async def test_the_key_is_checked_with_the_provider_before_listing(
    client: httpx.AsyncClient, accept_every_key: list[tuple[str, str, str]]
) -> None:
    headers = await login(client)
    body = listing(base_url="http://127.0.0.1:9/v1/")
    assert (await client.post("/api/marketplace/listings", json=body, headers=headers)).status_code == 201
    assert accept_every_key == [("openai", "http://127.0.0.1:9/v1", body["api_key"])]


async def test_a_seller_pauses_renames_and_reprices_a_listing(client: httpx.AsyncClient, app: Any) -> None:
    headers = await login(client)
    created = (
        await client.post(
            "/api/marketplace/listings", json=listing(models=[{"model": "gpt-4.1-nano"}]), headers=headers
        )
    ).json()
    path = f"/api/marketplace/listings/{created['id']}"
    patched = await client.patch(
        path, json={"name": "renamed", "status": "paused", "pricing": {"multiplier": "1.25"}}, headers=headers
    )
    assert patched.status_code == 200, patched.text
    assert (patched.json()["name"], patched.json()["status"]) == ("renamed", "paused")
    assert patched.json()["pricing"] == {"multiplier": "1.25"}
    assert not app.state.services.listings.index.routes_for("gpt-4.1-nano")
    resumed = await client.patch(path, json={"status": "active"}, headers=headers)
    assert resumed.json()["status"] == "active"
    assert app.state.services.listings.index.routes_for("gpt-4.1-nano")


async def test_a_new_key_is_checked_and_replaces_the_old_one(
    client: httpx.AsyncClient, accept_every_key: list[tuple[str, str, str]], db: Any
) -> None:
    headers = await login(client)
    created = (await client.post("/api/marketplace/listings", json=listing(), headers=headers)).json()
    new_key = "sk-rotated-" + secrets.token_hex(8)
    patched = await client.patch(
        f"/api/marketplace/listings/{created['id']}", json={"api_key": new_key}, headers=headers
    )
    assert patched.json()["key_last4"] == "…" + new_key[-4:]
    assert accept_every_key[-1][2] == new_key
    assert new_key not in patched.text


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"status": "disabled"}, "status"),
        ({"status_reason": "I say so"}, "status_reason"),
        ({"provider": "anthropic"}, "provider"),
        ({"seller_id": str(uuid.uuid4())}, "seller_id"),
        ({"models": [{"model": "gpt-4o"}]}, "models"),
        ({"pricing": {"multiplier": "0"}}, "pricing.multiplier"),
    ],
)
async def test_a_seller_cannot_change_what_is_not_theirs_to_change(
    client: httpx.AsyncClient, change: dict[str, Any], param: str
) -> None:
    headers = await login(client)
    created = (await client.post("/api/marketplace/listings", json=listing(), headers=headers)).json()
    path = f"/api/marketplace/listings/{created['id']}"
    response = await client.patch(path, json=change, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert (await client.get(path, headers=headers)).json() == created


async def test_another_seller_cannot_change_a_listing(client: httpx.AsyncClient) -> None:
    owner, stranger = await login(client), await login(client)
    created = (await client.post("/api/marketplace/listings", json=listing(), headers=owner)).json()
    response = await client.patch(f"/api/marketplace/listings/{created['id']}", json={"name": "mine"}, headers=stranger)
    assert response.status_code == 404


async def test_the_provider_key_is_stored_encrypted(client: httpx.AsyncClient, db: Any) -> None:
    headers = await login(client)
    body = listing()
    created = (await client.post("/api/marketplace/listings", json=body, headers=headers)).json()
    stored = await db.fetchval("SELECT key_ciphertext FROM listings WHERE id = $1", uuid.UUID(created["id"]))
    assert body["api_key"] not in stored


async def test_a_new_listing_is_routable_at_once(client: httpx.AsyncClient, app: Any) -> None:
    headers = await login(client)
    await client.post(
        "/api/marketplace/listings", json=listing(models=[{"model": "llama-3.1-8b-instruct"}]), headers=headers
    )
    assert app.state.services.listings.index.routes_for("llama-3.1-8b-instruct")


async def test_another_seller_cannot_read_or_delete_a_listing(client: httpx.AsyncClient) -> None:
    owner, stranger = await login(client), await login(client)
    created = (await client.post("/api/marketplace/listings", json=listing(), headers=owner)).json()
    path = f"/api/marketplace/listings/{created['id']}"
    assert (await client.get(path, headers=stranger)).status_code == 404
    assert (await client.delete(path, headers=stranger)).status_code == 404
    assert (await client.get("/api/marketplace/listings", headers=stranger)).json()["data"] == []
    assert (await client.get(path, headers=owner)).status_code == 200


async def test_deleting_a_listing_removes_it_from_routing(client: httpx.AsyncClient, app: Any) -> None:
    headers = await login(client)
    created = (
        await client.post(
            "/api/marketplace/listings", json=listing(models=[{"model": "mistral-small"}]), headers=headers
        )
    ).json()
    assert (await client.delete(f"/api/marketplace/listings/{created['id']}", headers=headers)).status_code == 204
    assert not app.state.services.listings.index.routes_for("mistral-small")
    assert (await client.get(f"/api/marketplace/listings/{created['id']}", headers=headers)).status_code == 404


async def test_the_same_provider_key_cannot_be_listed_twice(client: httpx.AsyncClient) -> None:
    headers = await login(client)
    body = listing()
    assert (await client.post("/api/marketplace/listings", json=body, headers=headers)).status_code == 201
    again = await client.post("/api/marketplace/listings", json=body, headers=await login(client))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "duplicate_key"
    assert body["api_key"] not in again.text


async def test_listing_without_a_session_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/marketplace/listings", json=listing())
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("override", "param"),
    [
        ({"attest_resale": False}, "attest_resale"),
        ({"provider": "gemini"}, "provider"),
        ({"models": []}, "models"),
        ({"models": [{"model": "gpt-4o"}, {"model": "gpt-4o"}]}, "models"),
        ({"models": [{"model": "my-private-model"}]}, "pricing"),
        ({"pricing": {"multiplier": 0.8}}, "pricing.multiplier"),
        (
            {"pricing": {"input_usd_per_million": "0.1234567", "output_usd_per_million": "1"}},
            "pricing.input_usd_per_million",
        ),
        ({"pricing": {"input_usd_per_million": "1e3", "output_usd_per_million": "1"}}, "pricing.input_usd_per_million"),
        (
            {"pricing": {"input_usd_per_million": "1e-999999999", "output_usd_per_million": "1"}},
            "pricing.input_usd_per_million",
        ),
        ({"pricing": {"input_usd_per_million": "0", "output_usd_per_million": "0"}}, "pricing.input_usd_per_million"),
        ({"pricing": {"input_usd_per_million": "1", "output_usd_per_million": "-1"}}, "pricing.output_usd_per_million"),
        (
            {"pricing": {"input_usd_per_million": "\uff11", "output_usd_per_million": "1"}},
            "pricing.input_usd_per_million",
        ),
        ({"pricing": {"multiplier": "1_0"}}, "pricing.multiplier"),
        ({"pricing": {"multiplier": " 1"}}, "pricing.multiplier"),
        ({"pricing": {"multiplier": "NaN"}}, "pricing.multiplier"),
        ({"pricing": {"multiplier": "1", "input_usd_per_million": "1"}}, "pricing"),
        ({"models": [{"model": "gpt-4o"}, {"model": "bad name"}]}, "models.1.model"),
        ({"limits": {"rpm": -1}}, "limits.rpm"),
        ({"limits": {"rpd": 5}}, "limits.rpd"),
        ({"api_key": ""}, "api_key"),
        ({"base_url": "ftp://example.com/v1"}, "base_url"),
        ({"base_url": "http://user:pw@127.0.0.1/v1"}, "base_url"),
        ({"owner": "someone-else"}, "owner"),
    ],
)
async def test_a_bad_listing_is_refused_naming_the_field_and_nothing_is_stored(
    client: httpx.AsyncClient, db: Any, override: dict[str, Any], param: str
) -> None:
    headers = await login(client)
    before = await count_listings(db)
    response = await client.post("/api/marketplace/listings", json=listing(**override), headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert await count_listings(db) == before


async def test_a_model_outside_the_catalog_is_accepted_with_explicit_prices(client: httpx.AsyncClient) -> None:
    headers = await login(client)
    body = listing(
        models=[{"model": "my-private-model"}],
        pricing={"input_usd_per_million": "0.15", "output_usd_per_million": "0.6"},
    )
    created = await client.post("/api/marketplace/listings", json=body, headers=headers)
    assert created.status_code == 201
    assert created.json()["pricing"] == {"input_usd_per_million": "0.150000", "output_usd_per_million": "0.600000"}


async def test_bad_json_is_refused(client: httpx.AsyncClient) -> None:
    headers = await login(client)
    response = await client.post("/api/marketplace/listings", content=b"{nope", headers=headers)
    assert response.status_code == 400


async def test_limits_are_stored_as_an_object_and_shown_back(client: httpx.AsyncClient, db: Any) -> None:
    headers = await login(client)
    created = await client.post(
        "/api/marketplace/listings", json=listing(limits={"rpm": 60, "tpm": 1000}), headers=headers
    )
    assert created.json()["limits"] == {"rpm": 60, "tpm": 1000}
    stored = await db.fetchval(
        "SELECT jsonb_typeof(limits) FROM listings WHERE id = $1", uuid.UUID(created.json()["id"])
    )
    assert stored == "object"
