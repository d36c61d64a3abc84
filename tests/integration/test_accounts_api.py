"""The accounts REST API end to end, on the real app with real Postgres and Redis."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.support.emails import unique_email

PASSWORD = "correct horse battery"


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    return dict(error)


async def register(client: httpx.AsyncClient, email: str | None = None) -> dict[str, Any]:
    body = {"email": email or unique_email(), "password": PASSWORD}
    response = await client.post("/api/auth/register", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/auth/login", json={"email": email, "password": password})


async def bearer_for(client: httpx.AsyncClient, email: str | None = None) -> dict[str, str]:
    user = await register(client, email)
    response = await login(client, user["email"])
    assert response.status_code == 200, response.text
    client.cookies.clear()  # these tests speak bearer; cookie behaviour has its own tests
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def create_key(client: httpx.AsyncClient, auth: dict[str, str], name: str = "ci") -> dict[str, Any]:
    response = await client.post("/api/keys", json={"name": name}, headers=auth)
    assert response.status_code == 201, response.text
    return dict(response.json())


@pytest.fixture
async def other_ip_client(app: Starlette) -> Any:
    """A client whose requests come from their own address, so per-IP counters start at zero."""
    address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    transport = httpx.ASGITransport(app=app, client=(address, 4321))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        yield c


async def test_register_answers_201_with_id_email_and_the_user_role(client: httpx.AsyncClient) -> None:
    email = unique_email()
    response = await client.post("/api/auth/register", json={"email": f"  {email} ", "password": PASSWORD})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "role"} and body["email"] == email and body["role"] == "user"
    uuid.UUID(body["id"])


async def test_register_login_create_list_and_revoke_a_key(client: httpx.AsyncClient, app: Starlette) -> None:
    auth = await bearer_for(client)
    created = await create_key(client, auth, "laptop")
    assert set(created) >= {"id", "name", "key", "prefix", "created_at"}
    assert created["key"].startswith("agw-") and created["prefix"] == created["key"][:12]
    assert (await app.state.services.keys.lookup(created["key"])).key_id == created["id"]

    listed = await client.get("/api/keys", headers=auth)
    assert listed.status_code == 200
    [entry] = listed.json()["data"]
    assert set(entry) == {
        "id",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
        "routing",
        "daily_spend_cap_usd",
        "monthly_spend_cap_usd",
    }
    assert entry["revoked_at"] is None and created["key"] not in listed.text

    assert (await client.delete(f"/api/keys/{created['id']}", headers=auth)).status_code == 204
    assert await app.state.services.keys.lookup(created["key"]) is None
    [revoked] = (await client.get("/api/keys", headers=auth)).json()["data"]
    assert revoked["revoked_at"] is not None


async def test_login_answers_a_bearer_token_with_its_lifetime(client: httpx.AsyncClient, app: Starlette) -> None:
    user = await register(client)
    response = await login(client, user["email"])
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer" and body["expires_in"] == app.state.settings.jwt_ttl_seconds
    assert response.headers["cache-control"] == "no-store"


async def test_login_ignores_the_case_of_the_email(client: httpx.AsyncClient) -> None:
    user = await register(client)
    assert (await login(client, user["email"].upper())).status_code == 200


async def test_me_answers_the_signed_in_user(client: httpx.AsyncClient) -> None:
    email = unique_email()
    auth = await bearer_for(client, email)
    response = await client.get("/api/auth/me", headers=auth)
    assert response.status_code == 200 and response.json()["email"] == email


async def test_me_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/api/auth/me"), 401)


async def test_an_invalid_bearer_token_is_401_with_the_openai_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/keys", headers={"Authorization": "Bearer not.a.jwt"})
    assert assert_openai_error(response, 401)["type"] == "authentication_error"


async def test_a_duplicate_email_in_another_case_is_409(client: httpx.AsyncClient) -> None:
    email = unique_email()
    await register(client, email)
    response = await client.post("/api/auth/register", json={"email": email.upper(), "password": PASSWORD})
    assert assert_openai_error(response, 409, "email")["code"] == "email_taken"


async def test_register_refuses_a_role_field(client: httpx.AsyncClient) -> None:
    body = {"email": unique_email(), "password": PASSWORD, "role": "admin"}
    assert_openai_error(await client.post("/api/auth/register", json=body), 400, "role")


async def test_a_refused_role_field_creates_no_account(client: httpx.AsyncClient) -> None:
    email = unique_email()
    await client.post("/api/auth/register", json={"email": email, "password": PASSWORD, "role": "admin"})
    assert_openai_error(await login(client, email), 401)


async def test_bad_json_is_400_with_the_openai_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/register", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert assert_openai_error(response, 400)["type"] == "invalid_request_error"


async def test_a_missing_field_is_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/auth/register", json={"email": unique_email()})
    assert_openai_error(response, 400, "password")


async def test_an_unknown_field_is_400_naming_it(client: httpx.AsyncClient) -> None:
    auth = await bearer_for(client)
    assert_openai_error(await client.post("/api/keys", json={"name": "x", "scopes": []}, headers=auth), 400, "scopes")


async def test_a_mistyped_field_is_400_naming_it(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/auth/login", json={"email": ["x"], "password": PASSWORD})
    assert_openai_error(response, 400, "email")


async def test_a_short_password_is_400_naming_it(client: httpx.AsyncClient) -> None:
    body = {"email": unique_email(), "password": "short"}
    assert_openai_error(await client.post("/api/auth/register", json=body), 400, "password")


async def test_a_form_encoded_login_is_refused(client: httpx.AsyncClient) -> None:
    user = await register(client)
    response = await client.post("/api/auth/login", data={"email": user["email"], "password": PASSWORD})
    assert_openai_error(response, 400)


async def test_a_wrong_password_is_401(client: httpx.AsyncClient) -> None:
    user = await register(client)
    error = assert_openai_error(await login(client, user["email"], "wrong password!"), 401)
    assert error["code"] == "invalid_credentials"


async def test_an_unknown_email_gets_the_same_answer_as_a_wrong_password(client: httpx.AsyncClient) -> None:
    user = await register(client)
    wrong = (await login(client, user["email"], "wrong password!")).json()
    unknown = (await login(client, unique_email("nobody"))).json()
    assert wrong == unknown


async def test_the_eleventh_failed_login_for_an_email_is_429_with_retry_after(
    other_ip_client: httpx.AsyncClient,
) -> None:
    user = await register(other_ip_client)
    for _ in range(10):
        assert (await login(other_ip_client, user["email"], "wrong password!")).status_code == 401
    response = await login(other_ip_client, user["email"], "wrong password!")
    assert_openai_error(response, 429)
    assert 0 < int(response.headers["retry-after"]) <= 15 * 60


async def test_a_rate_limited_email_is_refused_even_with_the_right_password(
    other_ip_client: httpx.AsyncClient,
) -> None:
    user = await register(other_ip_client)
    for _ in range(11):
        await login(other_ip_client, user["email"], "wrong password!")
    assert (await login(other_ip_client, user["email"])).status_code == 429


async def test_successful_logins_do_not_count_towards_the_limit(other_ip_client: httpx.AsyncClient) -> None:
    user = await register(other_ip_client)
    for _ in range(12):
        assert (await login(other_ip_client, user["email"])).status_code == 200


async def test_deleting_another_users_key_is_404_and_the_key_keeps_working(
    client: httpx.AsyncClient, app: Starlette
) -> None:
    owner = await bearer_for(client)
    intruder = await bearer_for(client)
    key = await create_key(client, owner)
    assert_openai_error(await client.delete(f"/api/keys/{key['id']}", headers=intruder), 404, "id")
    assert await app.state.services.keys.lookup(key["key"]) is not None
    [entry] = (await client.get("/api/keys", headers=owner)).json()["data"]
    assert entry["revoked_at"] is None


async def test_another_users_keys_are_not_listed(client: httpx.AsyncClient) -> None:
    owner = await bearer_for(client)
    await create_key(client, owner)
    assert (await client.get("/api/keys", headers=await bearer_for(client))).json() == {"data": []}


async def test_deleting_a_key_id_that_is_not_a_uuid_is_404(client: httpx.AsyncClient) -> None:
    auth = await bearer_for(client)
    assert_openai_error(await client.delete("/api/keys/not-a-uuid", headers=auth), 404, "id")


async def test_revoking_a_key_twice_is_204_both_times(client: httpx.AsyncClient) -> None:
    auth = await bearer_for(client)
    key = await create_key(client, auth)
    for _ in range(2):
        assert (await client.delete(f"/api/keys/{key['id']}", headers=auth)).status_code == 204


async def test_creating_a_key_without_credentials_is_401(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.post("/api/keys", json={"name": "x"}), 401)


async def test_login_sets_an_httponly_lax_session_cookie_and_a_readable_csrf_cookie(
    client: httpx.AsyncClient,
) -> None:
    user = await register(client)
    response = await login(client, user["email"])
    cookies = {c.split("=", 1)[0]: c.lower() for c in response.headers.get_list("set-cookie")}
    session, csrf = cookies["aichat_session"], cookies["aichat_csrf"]
    for cookie in (session, csrf):
        assert "samesite=lax" in cookie and "path=/" in cookie and "max-age=" in cookie
    assert "httponly" in session and "httponly" not in csrf


async def test_a_session_cookie_authenticates_a_get(client: httpx.AsyncClient) -> None:
    user = await register(client)
    await login(client, user["email"])  # the client keeps the cookies
    assert (await client.get("/api/keys")).status_code == 200


async def test_a_cookie_post_without_the_csrf_header_is_403(client: httpx.AsyncClient) -> None:
    user = await register(client)
    await login(client, user["email"])
    assert_openai_error(await client.post("/api/keys", json={"name": "x"}), 403)


async def test_a_cookie_post_with_the_csrf_header_succeeds(client: httpx.AsyncClient) -> None:
    user = await register(client)
    await login(client, user["email"])
    headers = {"x-csrf-token": client.cookies["aichat_csrf"]}
    assert (await client.post("/api/keys", json={"name": "x"}, headers=headers)).status_code == 201


async def test_a_cookie_delete_with_a_wrong_csrf_header_is_403(client: httpx.AsyncClient) -> None:
    user = await register(client)
    await login(client, user["email"])
    response = await client.delete(f"/api/keys/{uuid.uuid4()}", headers={"x-csrf-token": "0" * 64})
    assert_openai_error(response, 403)


async def test_a_stale_session_cookie_does_not_block_login(client: httpx.AsyncClient) -> None:
    user = await register(client)
    client.cookies.set("aichat_session", "stale.token.value")
    assert (await login(client, user["email"])).status_code == 200


async def test_logout_clears_the_cookies(client: httpx.AsyncClient) -> None:
    user = await register(client)
    await login(client, user["email"])
    csrf = {"x-csrf-token": client.cookies["aichat_csrf"]}
    assert (await client.post("/api/auth/logout", headers=csrf)).status_code == 204
    assert "aichat_session" not in client.cookies
    assert_openai_error(await client.get("/api/auth/me"), 401)


async def test_a_gateway_key_is_not_accepted_on_the_api(client: httpx.AsyncClient) -> None:
    key = await create_key(client, await bearer_for(client))
    assert_openai_error(await client.get("/api/keys", headers={"Authorization": f"Bearer {key['key']}"}), 401)
