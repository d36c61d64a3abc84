"""The session key: the gateway key a signed-in browser gets for its own /v1 calls
(`POST /api/auth/session-key`). One per session, the same on every call in it, left out of the
user's key list and key API, expiring with the session, and refused on /v1 by every process within
a second of the session ending (logout, a password change, an admin)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis
from starlette.applications import Starlette

from aichat_gateway.accounts import sessionkeys, sessions
from aichat_gateway.accounts.keycache import KeyCache
from aichat_gateway.accounts.keyformat import looks_like_key
from aichat_gateway.accounts.tokens import SessionClaims
from aichat_gateway.config.settings import Settings
from tests.support.calls import assert_openai_error
from tests.support.emails import unique_email
from tests.support.gateways import Gateways
from tests.support.market import Market
from tests.support.processes import Proc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PASSWORD = "correct horse battery"
PROPAGATION_LIMIT = 1.0  # seconds for every process to refuse the key of an ended session
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


class Login:
    def __init__(self, user_id: str, email: str, token: str, csrf: str) -> None:
        self.user_id, self.email, self.token, self.csrf = user_id, email, token, csrf

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def login(client: httpx.AsyncClient, user_id: str, email: str) -> Login:
    answer = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    found = Login(user_id, email, answer.json()["access_token"], client.cookies["aichat_csrf"])
    client.cookies.clear()
    return found


async def new_user(client: httpx.AsyncClient) -> Login:
    email = unique_email("skey")
    answer = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return await login(client, answer.json()["id"], email)


async def session_key(client: httpx.AsyncClient, session: Login) -> dict[str, str]:
    answer = await client.post("/api/auth/session-key", headers=session.auth)
    assert answer.status_code == 200, answer.text
    body: dict[str, str] = answer.json()
    return body


async def v1_status(client: httpx.AsyncClient, key: str) -> int:
    return (await client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})).status_code


async def refused_within(client: httpx.AsyncClient, key: str) -> float:
    """Seconds until `client`'s app refuses the key on /v1 (401); fails past twice the limit."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (code := await v1_status(client, key)) == 200:
        assert loop.time() - started < 2 * PROPAGATION_LIMIT, "the ended session's key still works"
        await asyncio.sleep(0.01)
    assert code == 401
    return loop.time() - started


@pytest.fixture
async def listening(app: Starlette) -> None:
    await asyncio.wait_for(app.state.services.keys.subscribed.wait(), timeout=5)


@pytest.fixture
async def app_b(settings: Settings) -> AsyncIterator[Starlette]:
    """A second gateway process: another app on the same Postgres and Redis."""
    from aichat_gateway.server.app import create_app

    application = create_app(settings, configure_logs=False)
    async with application.router.lifespan_context(application):
        await asyncio.wait_for(application.state.services.keys.subscribed.wait(), timeout=5)
        yield application


@pytest.fixture
async def client_b(app_b: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_b), base_url="http://gateway-b.test") as c:
        yield c


# ---- getting one ---------------------------------------------------------------------------------


async def test_a_session_gets_a_gateway_key_named_dashboard_that_expires_with_it(client: httpx.AsyncClient) -> None:
    session = await new_user(client)
    got = await session_key(client, session)
    assert looks_like_key(got["key"]) and got["name"] == "dashboard"
    [listed] = (await client.get("/api/auth/sessions", headers=session.auth)).json()["data"]
    assert datetime.fromisoformat(got["expires_at"]) == datetime.fromisoformat(listed["expires_at"])


async def test_asking_again_in_the_same_session_gives_the_same_key(client: httpx.AsyncClient) -> None:
    session = await new_user(client)
    assert await session_key(client, session) == await session_key(client, session)


async def test_each_session_of_a_user_gets_its_own_key(client: httpx.AsyncClient) -> None:
    first = await new_user(client)
    second = await login(client, first.user_id, first.email)
    assert (await session_key(client, first))["key"] != (await session_key(client, second))["key"]


async def test_the_browser_gets_it_with_its_cookie_and_csrf_header(client: httpx.AsyncClient) -> None:
    session = await new_user(client)
    client.cookies.set("aichat_session", session.token)
    client.cookies.set("aichat_csrf", session.csrf)
    answer = await client.post("/api/auth/session-key", headers={"x-csrf-token": session.csrf})
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"


async def test_a_cookie_without_the_csrf_header_gets_no_key(client: httpx.AsyncClient) -> None:
    session = await new_user(client)
    client.cookies.set("aichat_session", session.token)
    client.cookies.set("aichat_csrf", session.csrf)
    assert (await client.post("/api/auth/session-key")).status_code == 403


async def test_without_a_session_there_is_no_key(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.post("/api/auth/session-key"), 401)


# ---- kept apart from the user's own keys ---------------------------------------------------------


async def test_the_session_key_is_not_in_the_users_key_list(client: httpx.AsyncClient) -> None:
    session = await new_user(client)
    got = await session_key(client, session)
    listed = (await client.get("/api/keys", headers=session.auth)).json()["data"]
    assert got["id"] not in {k["id"] for k in listed}


async def test_the_key_api_cannot_revoke_or_change_a_session_key(client: httpx.AsyncClient) -> None:
    session = await new_user(client)
    got = await session_key(client, session)
    revoked = await client.delete(f"/api/keys/{got['id']}", headers=session.auth)
    changed = await client.patch(f"/api/keys/{got['id']}", json={"name": "mine"}, headers=session.auth)
    assert (revoked.status_code, changed.status_code) == (404, 404)
    assert await v1_status(client, got["key"]) == 200


# ---- ending with the session, in every process ---------------------------------------------------


@pytest.mark.parametrize("logout_on", ["a", "b"])
async def test_after_logout_every_process_refuses_the_key_within_a_second(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient, listening: None, logout_on: str
) -> None:
    session = await new_user(client)
    key = (await session_key(client, session))["key"]
    for c in (client, client_b):  # both processes hold the key in their caches
        assert await v1_status(c, key) == 200
    leaving, other = (client, client_b) if logout_on == "a" else (client_b, client)
    assert (await leaving.post("/api/auth/logout", headers=session.auth)).status_code == 204
    assert await refused_within(other, key) < PROPAGATION_LIMIT
    assert await refused_within(leaving, key) < PROPAGATION_LIMIT


async def test_a_password_change_ends_the_keys_of_the_other_sessions_only(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient, listening: None
) -> None:
    current = await new_user(client)
    other = await login(client, current.user_id, current.email)
    kept, ended = (await session_key(client, current))["key"], (await session_key(client, other))["key"]
    assert await v1_status(client_b, kept) == 200 and await v1_status(client_b, ended) == 200
    body = {"current_password": PASSWORD, "new_password": "a whole new horse battery"}
    assert (await client.post("/api/auth/password", json=body, headers=current.auth)).status_code == 204
    assert await refused_within(client_b, ended) < PROPAGATION_LIMIT
    assert await v1_status(client_b, kept) == 200


async def test_an_admin_ending_a_users_sessions_ends_their_keys(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient, listening: None, db: asyncpg.Connection
) -> None:
    admin = await new_user(client)
    await db.execute("UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(admin.user_id))
    user = await new_user(client)
    key = (await session_key(client, user))["key"]
    assert await v1_status(client_b, key) == 200
    ended = await client.post(f"/api/admin/users/{user.user_id}/sessions/revoke", headers=admin.auth)
    assert ended.status_code == 204
    assert await refused_within(client_b, key) < PROPAGATION_LIMIT


# ---- expiring with the session -------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_cached_session_key_stops_when_its_session_expires(
    db: asyncpg.Connection, database_url: str, settings: Settings
) -> None:
    user_id = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'unused') RETURNING id", unique_email("skey")
    )
    start = time.time()
    claims = SessionClaims(str(user_id), "user", int(start), int(start) + 600, uuid.uuid4().hex)
    await sessions.start(db, claims)
    got = await sessionkeys.session_key(db, settings, str(user_id), claims.token_id)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    redis = Redis.from_url(settings.redis_url)
    # Frozen clocks: only the session's expiry, not the cache's TTL, can end the key here.
    monotonic, wall = Clock(1000.0), Clock(claims.expires_at - 5.0)
    cache = KeyCache(pool, redis, settings, monotonic, wall_clock=wall)
    try:
        assert await cache.lookup(got.secret) is not None
        monotonic.now += 5.0
        wall.now += 5.0
        assert await cache.lookup(got.secret) is None
    finally:
        await redis.aclose()
        await pool.close()


# ---- on real gateway processes, with a real model call -------------------------------------------


def test_the_key_answers_a_chat_until_logout_then_both_gateways_say_401(gateways: Gateways, market: Market) -> None:
    a, b = gateways.a, gateways.b
    login_answer = httpx.post(
        a.url + "/api/auth/login", json={"email": market.buyer.email, "password": market.buyer.password}, timeout=10
    )
    assert login_answer.status_code == 200, login_answer.text
    auth = {"Authorization": f"Bearer {login_answer.json()['access_token']}"}
    key = httpx.post(a.url + "/api/auth/session-key", headers=auth, timeout=10).json()["key"]
    for gateway in (a, b):
        answer = chat(gateway, key)
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
    assert httpx.post(a.url + "/api/auth/logout", headers=auth, timeout=10).status_code == 204
    logged_out = time.monotonic()
    for gateway in (b, a):
        while (answer := chat(gateway, key)).status_code == 200:
            assert time.monotonic() - logged_out < 2 * PROPAGATION_LIMIT, f"{gateway.name} still serves the key"
        assert_openai_error(answer, 401, "invalid_api_key")
    assert time.monotonic() - logged_out < PROPAGATION_LIMIT


def chat(gateway: Proc, key: str) -> httpx.Response:
    return httpx.post(
        gateway.base_url + "/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
