"""Per-key settings on /api/keys (routing defaults, daily and monthly spend caps), on the real app.

Real Postgres and Redis; the in-process `client` drives the API. Cache tests look at the app's own
KeyCache, and at a second KeyCache (its own Redis connection, a frozen clock) standing for another
gateway process: only the eviction message can make that one reload a key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from aichat_gateway.accounts.keycache import KeyCache, KeyPrincipal
from aichat_gateway.config.settings import Settings
from tests.support.emails import unique_email

pytestmark = pytest.mark.timeout(30)

PASSWORD = "correct horse battery"
ROUTING = {"sort": "price", "only": ["lst_b", "lst_a"], "max_price": {"prompt": "1.5"}, "allow_fallbacks": False}
# The same preferences as stored and shown: lists sorted, prices with six places.
ROUTING_NORMALISED = {
    "only": ["lst_a", "lst_b"],
    "sort": "price",
    "max_price": {"prompt": "1.500000"},
    "allow_fallbacks": False,
}
BAD_CAPS = ["0", "-1", "1e3", 1.5, "1.0000001", "abc", True, 10]


class FrozenClock:
    def __call__(self) -> float:
        return 1000.0


# ---- helpers ------------------------------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error
    return error


async def bearer_for(client: httpx.AsyncClient) -> dict[str, str]:
    email = unique_email("keyset")
    registered = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    client.cookies.clear()  # bearer only: the cookie path has its own tests
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def create_key(client: httpx.AsyncClient, auth: dict[str, str], **settings: Any) -> dict[str, Any]:
    response = await client.post("/api/keys", json={"name": "ci", **settings}, headers=auth)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def listed(client: httpx.AsyncClient, auth: dict[str, str], key_id: str) -> dict[str, Any]:
    response = await client.get("/api/keys", headers=auth)
    assert response.status_code == 200, response.text
    [entry] = [k for k in response.json()["data"] if k["id"] == key_id]
    return dict(entry)


async def patch(client: httpx.AsyncClient, auth: dict[str, str], key_id: str, body: Any) -> httpx.Response:
    return await client.patch(f"/api/keys/{key_id}", json=body, headers=auth)


def settings_of(entry: dict[str, Any]) -> dict[str, Any]:
    return {f: entry[f] for f in ("name", "routing", "daily_spend_cap_usd", "monthly_spend_cap_usd")}


@pytest.fixture
async def auth(client: httpx.AsyncClient) -> dict[str, str]:
    return await bearer_for(client)


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    # No jsonb codec on purpose: the key cache must not depend on the app pool's.
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def other_process(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[KeyCache]:
    """A second gateway's key cache: same Postgres and Redis prefix, its own connection, listening."""
    redis = Redis.from_url(settings.redis_url)
    cache = KeyCache(pool, redis, settings, FrozenClock())
    task = asyncio.create_task(cache.listen_for_revocations())
    try:
        await asyncio.wait_for(cache.subscribed.wait(), timeout=5)
        yield cache
    finally:
        task.cancel()
        await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), timeout=5)
        await redis.aclose()


async def principal(app: Starlette, secret: str) -> KeyPrincipal:
    found = await app.state.services.keys.lookup(secret)
    assert found is not None
    return found  # type: ignore[no-any-return]


# ---- create and read back -----------------------------------------------------------------------


async def test_a_key_created_with_settings_shows_them_in_the_answer_and_the_list(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_key(
        client, auth, routing=ROUTING, daily_spend_cap_usd="12.5", monthly_spend_cap_usd="100.000001"
    )
    expected = {
        "routing": ROUTING_NORMALISED,
        "daily_spend_cap_usd": "12.500000",
        "monthly_spend_cap_usd": "100.000001",
    }
    assert {f: created[f] for f in expected} == expected
    assert {f: (await listed(client, auth, created["id"]))[f] for f in expected} == expected


async def test_a_key_created_with_only_a_name_has_no_settings(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await create_key(client, auth)
    entry = await listed(client, auth, created["id"])
    for shown in (created, entry):
        assert (shown["routing"], shown["daily_spend_cap_usd"], shown["monthly_spend_cap_usd"]) == (None, None, None)


async def test_null_settings_on_create_mean_none(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await create_key(client, auth, routing=None, daily_spend_cap_usd=None, monthly_spend_cap_usd=None)
    assert (created["routing"], created["daily_spend_cap_usd"], created["monthly_spend_cap_usd"]) == (None, None, None)


async def test_an_empty_routing_object_is_stored_as_none(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await create_key(client, auth, routing={})
    assert (await listed(client, auth, created["id"]))["routing"] is None


async def test_the_key_cache_carries_a_new_keys_settings(
    client: httpx.AsyncClient, auth: dict[str, str], app: Starlette
) -> None:
    created = await create_key(client, auth, routing=ROUTING, daily_spend_cap_usd="3", monthly_spend_cap_usd="50")
    found = await principal(app, created["key"])
    assert (found.routing, found.daily_cap_micro, found.monthly_cap_micro) == (
        ROUTING_NORMALISED,
        3_000_000,
        50_000_000,
    )


@pytest.mark.parametrize("value", BAD_CAPS, ids=repr)
async def test_a_bad_cap_on_create_is_400_naming_the_field_and_creates_nothing(
    client: httpx.AsyncClient, auth: dict[str, str], value: object
) -> None:
    response = await client.post("/api/keys", json={"name": "ci", "daily_spend_cap_usd": value}, headers=auth)
    assert_error(response, 400, "daily_spend_cap_usd")
    assert (await client.get("/api/keys", headers=auth)).json()["data"] == []


async def test_bad_routing_on_create_is_400_naming_the_routing_field(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    response = await client.post("/api/keys", json={"name": "ci", "routing": {"sort": "fastest"}}, headers=auth)
    error = assert_error(response, 400, "routing.sort")
    assert error["message"].startswith("routing.sort ")


async def test_an_unknown_field_on_create_is_400_naming_it(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.post("/api/keys", json={"name": "ci", "daily_cap_usd": "1"}, headers=auth)
    assert_error(response, 400, "daily_cap_usd")


# ---- PATCH --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "shown"),
    [
        ("name", "renamed", "renamed"),
        ("routing", ROUTING, ROUTING_NORMALISED),
        ("daily_spend_cap_usd", "0.000001", "0.000001"),
        ("monthly_spend_cap_usd", "250", "250.000000"),
    ],
)
async def test_a_patch_changes_that_field_alone(
    client: httpx.AsyncClient, auth: dict[str, str], field: str, value: object, shown: object
) -> None:
    created = await create_key(
        client, auth, routing={"sort": "latency"}, daily_spend_cap_usd="1", monthly_spend_cap_usd="20"
    )
    before = settings_of(await listed(client, auth, created["id"]))
    response = await patch(client, auth, created["id"], {field: value})
    assert response.status_code == 200, response.text
    assert settings_of(response.json()) == {**before, field: shown}
    assert settings_of(await listed(client, auth, created["id"])) == {**before, field: shown}


@pytest.mark.parametrize("field", ["routing", "daily_spend_cap_usd", "monthly_spend_cap_usd"])
async def test_null_in_a_patch_clears_that_setting(client: httpx.AsyncClient, auth: dict[str, str], field: str) -> None:
    created = await create_key(
        client, auth, routing={"sort": "latency"}, daily_spend_cap_usd="1", monthly_spend_cap_usd="20"
    )
    response = await patch(client, auth, created["id"], {field: None})
    assert response.status_code == 200, response.text
    assert (await listed(client, auth, created["id"]))[field] is None


async def test_a_patch_may_change_every_field_at_once(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await create_key(client, auth)
    body = {"name": "all", "routing": ROUTING, "daily_spend_cap_usd": "2", "monthly_spend_cap_usd": "30"}
    response = await patch(client, auth, created["id"], body)
    assert settings_of(response.json()) == {
        "name": "all",
        "routing": ROUTING_NORMALISED,
        "daily_spend_cap_usd": "2.000000",
        "monthly_spend_cap_usd": "30.000000",
    }


async def test_a_patch_answer_never_shows_the_secret(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await create_key(client, auth)
    response = await patch(client, auth, created["id"], {"name": "x"})
    assert "key" not in response.json() and created["key"] not in response.text


@pytest.mark.parametrize("field", ["key", "prefix", "user_id", "revoked_at", "created_at", "daily_cap_usd"])
async def test_a_field_outside_the_allow_list_is_400_naming_it(
    client: httpx.AsyncClient, auth: dict[str, str], field: str
) -> None:
    created = await create_key(client, auth)
    assert_error(await patch(client, auth, created["id"], {"name": "x", field: "1"}), 400, field)
    assert (await listed(client, auth, created["id"]))["name"] == "ci"


async def test_an_empty_patch_is_400(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    created = await create_key(client, auth)
    assert_error(await patch(client, auth, created["id"], {}), 400, None)


@pytest.mark.parametrize("value", [None, "", " ", 7])
async def test_a_bad_name_in_a_patch_is_400(client: httpx.AsyncClient, auth: dict[str, str], value: object) -> None:
    created = await create_key(client, auth)
    assert_error(await patch(client, auth, created["id"], {"name": value}), 400, "name")


@pytest.mark.parametrize(
    ("routing", "param"),
    [
        ({"sort": "fastest"}, "routing.sort"),
        ({"max_price": {"prompt": 1.5}}, "routing.max_price.prompt"),
        ({"max_price": {"prompt": "1.0000001"}}, "routing.max_price.prompt"),
        ({"ingore": ["lst_a"]}, "routing.ingore"),
        ({"only": []}, "routing.only"),
        ({"order": ["lst_a", "lst_a"]}, "routing.order"),
        ({"allow_fallbacks": "no"}, "routing.allow_fallbacks"),
        ("cheapest", "routing"),
        (["lst_a"], "routing"),
    ],
    ids=repr,
)
async def test_bad_routing_in_a_patch_is_400_naming_the_routing_field(
    client: httpx.AsyncClient, auth: dict[str, str], routing: object, param: str
) -> None:
    created = await create_key(client, auth, routing={"sort": "latency"})
    error = assert_error(await patch(client, auth, created["id"], {"routing": routing}), 400, param)
    assert "provider" not in error["message"]
    assert (await listed(client, auth, created["id"]))["routing"] == {"sort": "latency"}


@pytest.mark.parametrize("field", ["daily_spend_cap_usd", "monthly_spend_cap_usd"])
@pytest.mark.parametrize("value", BAD_CAPS, ids=repr)
async def test_a_bad_cap_in_a_patch_is_400_naming_the_field(
    client: httpx.AsyncClient, auth: dict[str, str], field: str, value: object
) -> None:
    created = await create_key(client, auth, daily_spend_cap_usd="1", monthly_spend_cap_usd="20")
    assert_error(await patch(client, auth, created["id"], {field: value}), 400, field)
    entry = await listed(client, auth, created["id"])
    assert (entry["daily_spend_cap_usd"], entry["monthly_spend_cap_usd"]) == ("1.000000", "20.000000")


async def test_patching_another_users_key_is_404_like_an_unknown_one_and_changes_nothing(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_key(client, auth, daily_spend_cap_usd="1")
    intruder = await bearer_for(client)
    theirs = await patch(client, intruder, created["id"], {"name": "mine", "daily_spend_cap_usd": "999"})
    unknown = await patch(client, intruder, str(uuid.uuid4()), {"name": "mine", "daily_spend_cap_usd": "999"})
    assert assert_error(theirs, 404, "id") == assert_error(unknown, 404, "id")
    entry = await listed(client, auth, created["id"])
    assert (entry["name"], entry["daily_spend_cap_usd"]) == ("ci", "1.000000")


async def test_patching_a_key_id_that_is_not_a_uuid_is_404(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    assert_error(await patch(client, auth, "not-a-uuid", {"name": "x"}), 404, "id")


async def test_patching_a_revoked_key_is_404_saying_it_is_revoked(
    client: httpx.AsyncClient, auth: dict[str, str]
) -> None:
    created = await create_key(client, auth)
    assert (await client.delete(f"/api/keys/{created['id']}", headers=auth)).status_code == 204
    error = assert_error(await patch(client, auth, created["id"], {"name": "back"}), 404, "id")
    assert "revoked" in error["message"]
    assert (await listed(client, auth, created["id"]))["name"] == "ci"


# ---- every process serves the new settings ------------------------------------------------------


async def test_after_a_patch_this_process_serves_the_new_settings(
    client: httpx.AsyncClient, auth: dict[str, str], app: Starlette
) -> None:
    created = await create_key(client, auth, routing={"sort": "latency"}, daily_spend_cap_usd="1")
    assert (await principal(app, created["key"])).daily_cap_micro == 1_000_000  # cached now
    body = {"name": "new", "routing": ROUTING, "daily_spend_cap_usd": None, "monthly_spend_cap_usd": "7"}
    assert (await patch(client, auth, created["id"], body)).status_code == 200
    found = await principal(app, created["key"])
    assert (found.name, found.routing, found.daily_cap_micro, found.monthly_cap_micro) == (
        "new",
        ROUTING_NORMALISED,
        None,
        7_000_000,
    )


async def test_after_a_patch_another_process_reloads_the_key(
    client: httpx.AsyncClient, auth: dict[str, str], other_process: KeyCache
) -> None:
    created = await create_key(client, auth, daily_spend_cap_usd="1")
    before = await other_process.lookup(created["key"])
    assert before is not None and before.daily_cap_micro == 1_000_000
    assert (await patch(client, auth, created["id"], {"daily_spend_cap_usd": "2"})).status_code == 200
    # Its clock is frozen, so no TTL can expire: only the eviction message makes it ask Postgres again.
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        after = await other_process.lookup(created["key"])
        assert after is not None, "a changed key must still authenticate"
        if after.daily_cap_micro == 2_000_000:
            break
        assert loop.time() - started < 2.0, "the other process still serves the old cap"
        await asyncio.sleep(0.01)


async def test_a_change_announcement_does_not_bring_a_revoked_key_back(
    client: httpx.AsyncClient, auth: dict[str, str], app: Starlette, db: asyncpg.Connection
) -> None:
    created = await create_key(client, auth)
    assert (await client.delete(f"/api/keys/{created['id']}", headers=auth)).status_code == 204
    key_hash = await db.fetchval("SELECT key_hash FROM api_keys WHERE id = $1", uuid.UUID(created["id"]))
    await app.state.services.keys.announce_changed(bytes(key_hash))
    assert await app.state.services.keys.lookup(created["key"]) is None


# ---- the schema ---------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["daily_spend_cap_micro", "monthly_spend_cap_micro"])
async def test_the_database_refuses_a_cap_that_is_not_positive(
    client: httpx.AsyncClient, auth: dict[str, str], db: asyncpg.Connection, column: str
) -> None:
    created = await create_key(client, auth)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(f"UPDATE api_keys SET {column} = 0 WHERE id = $1", uuid.UUID(created["id"]))


async def test_the_database_refuses_routing_that_is_not_an_object(
    client: httpx.AsyncClient, auth: dict[str, str], db: asyncpg.Connection
) -> None:
    created = await create_key(client, auth)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("UPDATE api_keys SET routing = '[1]'::jsonb WHERE id = $1", uuid.UUID(created["id"]))
