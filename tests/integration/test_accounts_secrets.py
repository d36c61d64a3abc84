"""Passwords, tokens and key secrets never reach the logs, and key secrets reach one response only."""

from __future__ import annotations

import io

import httpx
from starlette.applications import Starlette

from aichat_gateway.config.logging import configure_logging
from tests.support.emails import unique_email

PASSWORD = "hunter2-but-longer-and-unique"


async def run_account_flow(client: httpx.AsyncClient) -> tuple[list[httpx.Response], httpx.Response, str]:
    """Every accounts endpoint once, plus failures. Returns (other responses, create-key response, token)."""
    email = unique_email("secrets")
    seen = [await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})]
    seen.append(await client.post("/api/auth/login", json={"email": email, "password": PASSWORD + "x"}))
    seen.append(await client.post("/api/auth/register", json={"email": email, "password": PASSWORD}))
    seen.append(await client.post("/api/auth/register", json={"email": email, "password": 123}))
    login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    token = login.json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    client.cookies.clear()
    created = await client.post("/api/keys", json={"name": "ci"}, headers=auth)
    key_id = created.json()["id"]
    seen.append(await client.get("/api/keys", headers=auth))
    seen.append(await client.get("/api/auth/me", headers=auth))
    seen.append(await client.delete(f"/api/keys/{key_id}", headers=auth))
    seen.append(await client.get("/api/keys", headers={"Authorization": f"Bearer {token}x"}))
    seen.append(await client.get("/api/keys", headers={"Authorization": f"Bearer {created.json()['key']}"}))
    return [*seen, login], created, token


def response_text(response: httpx.Response) -> str:
    return response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items())


async def test_no_password_token_or_key_secret_appears_in_the_logs(client: httpx.AsyncClient, app: Starlette) -> None:
    captured = io.StringIO()
    configure_logging("debug", json=True, stream=captured)
    try:
        _, created, token = await run_account_flow(client)
    finally:
        configure_logging(app.state.settings.log_level, app.state.settings.log_json)
    logs = captured.getvalue()
    assert "login_succeeded" in logs and "api_key_created" in logs  # the capture did capture
    secret = created.json()["key"]
    for forbidden in (PASSWORD, token, token.split(".")[2], secret, secret[12:]):
        assert forbidden not in logs


async def test_the_password_appears_in_no_response(client: httpx.AsyncClient) -> None:
    responses, created, _ = await run_account_flow(client)
    for response in [*responses, created]:
        assert PASSWORD not in response_text(response)


async def test_the_key_secret_appears_only_in_the_create_key_response(client: httpx.AsyncClient) -> None:
    responses, created, _ = await run_account_flow(client)
    secret = created.json()["key"]
    for response in responses:
        assert secret not in response_text(response) and secret[12:] not in response_text(response)
