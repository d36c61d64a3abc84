"""Server-side sessions end to end, on two real apps sharing Postgres and Redis: a session JWT stops
working after logout, a password change (others only), `create-admin` and an admin's revoke, in
every process, and the session list shows the caller's live sessions and no tokens."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from aichat_gateway.accounts.loginlimit import LoginLimiter
from aichat_gateway.config.logging import configure_logging
from aichat_gateway.config.settings import Settings
from tests.support.emails import unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PASSWORD = "correct horse battery"
NEW_PASSWORD = "a whole new horse battery"
PROPAGATION_LIMIT = 1.0  # seconds for another process to refuse an ended session
CLI = str(Path(sys.executable).with_name("aichat-gateway"))


@dataclass
class Login:
    user_id: str
    email: str
    token: str
    csrf: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(client: httpx.AsyncClient, role_tag: str = "sess") -> tuple[str, str]:
    email = unique_email(role_tag)
    answer = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], email


async def login(client: httpx.AsyncClient, user_id: str, email: str, password: str = PASSWORD) -> Login:
    """A new session; the client keeps no cookies (tests that speak cookies set them themselves)."""
    answer = await client.post(
        "/api/auth/login", json={"email": email, "password": password}, headers={"user-agent": "pytest-browser/1.0"}
    )
    assert answer.status_code == 200, answer.text
    login = Login(user_id, email, answer.json()["access_token"], client.cookies["aichat_csrf"])
    client.cookies.clear()
    return login


async def new_user(client: httpx.AsyncClient, tag: str = "sess") -> Login:
    return await login(client, *await register(client, tag))


async def status(client: httpx.AsyncClient, session: Login) -> int:
    return (await client.get("/api/auth/me", headers=session.auth)).status_code


async def refused_within(client: httpx.AsyncClient, session: Login, limit: float = PROPAGATION_LIMIT) -> float:
    """Seconds until `client`'s app refuses the session (401); fails past twice the limit."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (code := await status(client, session)) == 200:
        assert loop.time() - started < 2 * limit, "the ended session still works"
        await asyncio.sleep(0.01)
    assert code == 401
    return loop.time() - started


def with_cookie(client: httpx.AsyncClient, session: Login) -> None:
    client.cookies.set("aichat_session", session.token)
    client.cookies.set("aichat_csrf", session.csrf)


@pytest.fixture
async def app_b(settings: Settings) -> AsyncIterator[Starlette]:
    """A second gateway process: another app on the same Postgres and Redis, listening for ends."""
    from aichat_gateway.server.app import create_app

    application = create_app(settings, configure_logs=False)
    async with application.router.lifespan_context(application):
        await asyncio.wait_for(application.state.services.sessions.subscribed.wait(), timeout=5)
        yield application


@pytest.fixture
async def client_b(app_b: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app_b), base_url="http://gateway-b.test") as c:
        yield c


@pytest.fixture
async def subscribed(app: Starlette) -> None:
    await asyncio.wait_for(app.state.services.sessions.subscribed.wait(), timeout=5)


# ---- logout --------------------------------------------------------------------------------------


async def test_a_bearer_token_answers_401_everywhere_after_logout(client: httpx.AsyncClient) -> None:
    session = await new_user(client)
    assert await status(client, session) == 200
    assert (await client.post("/api/auth/logout", headers=session.auth)).status_code == 204
    for method, path in (("GET", "/api/auth/me"), ("GET", "/api/keys"), ("GET", "/api/auth/sessions")):
        answer = await client.request(method, path, headers=session.auth)
        assert answer.status_code == 401, (path, answer.text)
        assert answer.json()["error"]["type"] == "authentication_error"
    assert (await client.post("/api/keys", json={"name": "ghost"}, headers=session.auth)).status_code == 401


async def test_a_session_cookie_is_dead_after_logout_even_if_replayed(client: httpx.AsyncClient) -> None:
    user_id, email = await register(client)
    answer = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    session = Login(user_id, email, answer.json()["access_token"], client.cookies["aichat_csrf"])
    assert client.cookies["aichat_session"] == session.token  # a browser: cookies as the server set them
    assert (await client.get("/api/auth/me")).status_code == 200
    answer = await client.post("/api/auth/logout", headers={"x-csrf-token": session.csrf})
    assert answer.status_code == 204
    assert "aichat_session" not in client.cookies
    with_cookie(client, session)  # a copy of the cookie taken before the logout
    assert (await client.get("/api/auth/me")).status_code == 401
    planted = await client.post("/api/keys", json={"name": "x"}, headers={"x-csrf-token": session.csrf})
    assert planted.status_code == 401
    client.cookies.clear()
    assert await status(client, session) == 401  # the same token as a bearer


async def test_a_cookie_logout_without_the_csrf_header_is_403_and_ends_nothing(client: httpx.AsyncClient) -> None:
    session = await new_user(client)
    with_cookie(client, session)
    assert (await client.post("/api/auth/logout")).status_code == 403
    client.cookies.clear()
    assert await status(client, session) == 200


async def test_logout_without_a_session_is_204(client: httpx.AsyncClient) -> None:
    assert (await client.post("/api/auth/logout")).status_code == 204


async def test_logout_ends_only_the_session_presented(client: httpx.AsyncClient) -> None:
    first = await new_user(client)
    second = await login(client, first.user_id, first.email)
    assert (await client.post("/api/auth/logout", headers=first.auth)).status_code == 204
    assert (await status(client, first), await status(client, second)) == (401, 200)


@pytest.mark.parametrize("logout_on", ["a", "b"])
async def test_a_logout_in_one_process_ends_the_session_in_the_other_within_a_second(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient, subscribed: None, logout_on: str
) -> None:
    session = await new_user(client)
    # Both processes have checked the session, so both hold it in their caches.
    for c in (client, client_b, client, client_b):
        assert await status(c, session) == 200
    leaving, other = (client, client_b) if logout_on == "a" else (client_b, client)
    assert (await leaving.post("/api/auth/logout", headers=session.auth)).status_code == 204
    assert await refused_within(other, session) < PROPAGATION_LIMIT
    assert await status(leaving, session) == 401


# ---- password changes ----------------------------------------------------------------------------


async def test_a_password_change_ends_every_other_session_but_keeps_the_current_one(
    client: httpx.AsyncClient, client_b: httpx.AsyncClient, subscribed: None
) -> None:
    current = await new_user(client)
    others = [await login(client, current.user_id, current.email) for _ in range(2)]
    for session in (current, *others):
        assert await status(client_b, session) == 200  # cached in process B too
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    answer = await client.post("/api/auth/password", json=body, headers=current.auth)
    assert answer.status_code == 204, answer.text
    for session in others:
        assert await refused_within(client_b, session) < PROPAGATION_LIMIT
        assert await status(client, session) == 401
    assert await status(client, current) == 200 and await status(client_b, current) == 200
    wrong_now = await client.post("/api/auth/login", json={"email": current.email, "password": PASSWORD})
    assert wrong_now.status_code == 401
    await login(client, current.user_id, current.email, NEW_PASSWORD)


async def test_a_cookie_session_changes_its_password_with_the_csrf_header_and_stays_signed_in(
    client: httpx.AsyncClient,
) -> None:
    session = await new_user(client)
    with_cookie(client, session)
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    assert (await client.post("/api/auth/password", json=body)).status_code == 403
    answer = await client.post("/api/auth/password", json=body, headers={"x-csrf-token": session.csrf})
    assert answer.status_code == 204, answer.text
    assert (await client.get("/api/auth/me")).status_code == 200


async def test_a_wrong_current_password_is_400_naming_it_and_changes_nothing(client: httpx.AsyncClient) -> None:
    current = await new_user(client)
    other = await login(client, current.user_id, current.email)
    body = {"current_password": "not the password", "new_password": NEW_PASSWORD}
    answer = await client.post("/api/auth/password", json=body, headers=current.auth)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("current_password", "wrong_password")
    assert "current_password" in error["message"]
    assert await status(client, other) == 200
    await login(client, current.user_id, current.email, PASSWORD)


async def test_a_new_password_against_the_policy_is_400_naming_new_password(client: httpx.AsyncClient) -> None:
    current = await new_user(client)
    body = {"current_password": PASSWORD, "new_password": "short"}
    answer = await client.post("/api/auth/password", json=body, headers=current.auth)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "new_password"


async def test_guessing_the_current_password_shares_the_login_limit(client: httpx.AsyncClient, app: Starlette) -> None:
    """A stolen session cannot brute-force the password: wrong guesses count against the account's
    login window (ten per 15 minutes; nine are counted straight into Redis, each real one costs argon2)."""
    current = await new_user(client)
    limiter = LoginLimiter(app.state.services.redis, app.state.settings.redis_prefix)
    await app.state.services.redis.set(limiter.email_key(current.email), 9, ex=900)
    body = {"current_password": "guess-0001", "new_password": NEW_PASSWORD}
    assert (await client.post("/api/auth/password", json=body, headers=current.auth)).status_code == 400
    right = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    limited = await client.post("/api/auth/password", json=right, headers=current.auth)
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    login_now = await client.post("/api/auth/login", json={"email": current.email, "password": PASSWORD})
    assert login_now.status_code == 429
    assert await status(client, current) == 200  # the session itself is not punished


# ---- create-admin --------------------------------------------------------------------------------


async def test_create_admin_resetting_a_password_ends_every_session_of_the_account(
    client: httpx.AsyncClient, settings: Settings, subscribed: None
) -> None:
    sessions = [await new_user(client, "promoted")]
    sessions.append(await login(client, sessions[0].user_id, sessions[0].email))
    assert all([await status(client, s) == 200 for s in sessions])
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "GATEWAY_SECRET_KEY": settings.secret_keys[0],
        "GATEWAY_REDIS_PREFIX": settings.redis_prefix,
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [CLI, "create-admin", "--email", sessions[0].email.upper(), "--password", NEW_PASSWORD],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert NEW_PASSWORD not in done.stdout + done.stderr
    for session in sessions:
        assert await refused_within(client, session) < PROPAGATION_LIMIT
    admin = await login(client, sessions[0].user_id, sessions[0].email, NEW_PASSWORD)
    assert (await client.get("/api/auth/me", headers=admin.auth)).json()["role"] == "admin"


# ---- an admin ends a user's sessions -------------------------------------------------------------


async def make_admin(client: httpx.AsyncClient, db: asyncpg.Connection) -> Login:
    user_id, email = await register(client, "admin")
    await db.execute("UPDATE users SET role = 'admin' WHERE id = $1", uuid.UUID(user_id))
    return await login(client, user_id, email)


@pytest.mark.parametrize("spelling", [str, str.upper], ids=["as-shown", "upper-case-uuid"])
async def test_an_admin_ends_every_session_of_a_user_in_every_process(
    client: httpx.AsyncClient,
    client_b: httpx.AsyncClient,
    db: asyncpg.Connection,
    subscribed: None,
    spelling: Callable[[str], str],
) -> None:
    admin = await make_admin(client, db)
    victim = await new_user(client)
    again = await login(client, victim.user_id, victim.email)
    for session in (victim, again):
        assert await status(client_b, session) == 200
    path = f"/api/admin/users/{spelling(victim.user_id)}/sessions/revoke"
    answer = await client.post(path, headers=admin.auth)
    assert answer.status_code == 204, answer.text
    for session in (victim, again):
        assert await refused_within(client_b, session) < PROPAGATION_LIMIT
        assert await status(client, session) == 401
    assert await status(client, admin) == 200
    await login(client, victim.user_id, victim.email)  # they can log in again


async def test_ending_a_users_sessions_is_403_for_a_non_admin(client: httpx.AsyncClient) -> None:
    intruder, victim = await new_user(client), await new_user(client)
    answer = await client.post(f"/api/admin/users/{victim.user_id}/sessions/revoke", headers=intruder.auth)
    assert answer.status_code == 403
    assert await status(client, victim) == 200


@pytest.mark.parametrize("user_id", [str(uuid.uuid4()), "not-a-uuid"])
async def test_ending_the_sessions_of_an_unknown_user_is_404(
    client: httpx.AsyncClient, db: asyncpg.Connection, user_id: str
) -> None:
    admin = await make_admin(client, db)
    answer = await client.post(f"/api/admin/users/{user_id}/sessions/revoke", headers=admin.auth)
    assert answer.status_code == 404 and answer.json()["error"]["param"] == "user_id"


# ---- the session list ----------------------------------------------------------------------------


async def test_the_session_list_shows_live_sessions_flags_the_current_one_and_shows_no_token(
    client: httpx.AsyncClient,
) -> None:
    first = await new_user(client)
    second = await login(client, first.user_id, first.email)
    ended = await login(client, first.user_id, first.email)
    assert (await client.post("/api/auth/logout", headers=ended.auth)).status_code == 204
    answer = await client.get("/api/auth/sessions", headers=second.auth)
    assert answer.status_code == 200
    data = answer.json()["data"]
    assert len(data) == 2
    assert all(set(s) == {"id", "created_at", "expires_at", "user_agent", "ip", "current"} for s in data)
    assert [s["current"] for s in data].count(True) == 1
    assert {s["user_agent"] for s in data} == {"pytest-browser/1.0"}
    for session in (first, second, ended):
        for part in (session.token, *session.token.split("."), session.csrf):
            assert part not in answer.text


async def test_ending_one_of_your_sessions_by_id_kills_that_token_only(client: httpx.AsyncClient) -> None:
    mine = await new_user(client)
    laptop = await login(client, mine.user_id, mine.email)
    listed = (await client.get("/api/auth/sessions", headers=mine.auth)).json()["data"]
    [laptop_id] = [s["id"] for s in listed if not s["current"]]
    assert (await client.delete(f"/api/auth/sessions/{laptop_id}", headers=mine.auth)).status_code == 204
    assert (await status(client, laptop), await status(client, mine)) == (401, 200)
    assert (await client.delete(f"/api/auth/sessions/{laptop_id}", headers=mine.auth)).status_code == 204


async def test_ending_another_users_session_is_404_and_it_keeps_working(client: httpx.AsyncClient) -> None:
    victim, intruder = await new_user(client), await new_user(client)
    [victim_session] = (await client.get("/api/auth/sessions", headers=victim.auth)).json()["data"]
    for session_id in (victim_session["id"], str(uuid.uuid4()), "not-a-uuid"):
        answer = await client.delete(f"/api/auth/sessions/{session_id}", headers=intruder.auth)
        assert answer.status_code == 404, answer.text
    assert await status(client, victim) == 200


# ---- secrets -------------------------------------------------------------------------------------


async def test_no_token_password_or_csrf_token_appears_in_any_response_or_log_line(
    client: httpx.AsyncClient, app: Starlette, db: asyncpg.Connection
) -> None:
    captured = io.StringIO()
    configure_logging("debug", json=True, stream=captured)
    try:
        admin = await make_admin(client, db)
        user = await new_user(client)
        other = await login(client, user.user_id, user.email)
        answers = [
            await client.get("/api/auth/sessions", headers=user.auth),
            await client.post(
                "/api/auth/password",
                json={"current_password": "wrong password!", "new_password": NEW_PASSWORD},
                headers=user.auth,
            ),
            await client.post(
                "/api/auth/password",
                json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                headers=user.auth,
            ),
            await client.get("/api/auth/me", headers=other.auth),
            await client.post(f"/api/admin/users/{user.user_id}/sessions/revoke", headers=admin.auth),
            await client.post("/api/auth/logout", headers=admin.auth),
            await client.post("/api/auth/logout", headers=admin.auth),
        ]
    finally:
        configure_logging(app.state.settings.log_level, app.state.settings.log_json)
    logs = captured.getvalue()
    assert "password_changed" in logs and "sessions_ended_by_admin" in logs and "session_ended" in logs
    shown = "\n".join(a.text + "\n" + "\n".join(f"{k}: {v}" for k, v in a.headers.items()) for a in answers)
    for session in (admin, user, other):
        for secret in (session.token, session.token.split(".")[2], session.csrf):
            assert secret not in logs and secret not in shown
    for password in (PASSWORD, NEW_PASSWORD, "wrong password!"):
        assert password not in logs and password not in shown
