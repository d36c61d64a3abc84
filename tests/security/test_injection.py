"""Injection strings in every place a caller's text reaches a query: the bearer key on /v1, every path
and query parameter of /api (also smuggled inside well-formed cursors), and the login fields.

Never a 500, never another user's data, and every table is still there afterwards.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from aichat_gateway.queryparams import encode_cursor
from tests.support.attack import (
    INJECTIONS,
    TABLES,
    Account,
    Gateway,
    assert_error,
    assert_not_server_error,
    listing_body,
    unique_email,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

KEY_SHAPED = "agw-" + "A" * 43  # passes the shape check, so it reaches the key look-up
BEARERS = (*INJECTIONS, KEY_SHAPED, "agw-' OR 1=1 --" + "A" * 28)


@dataclass(frozen=True)
class Scene:
    victim: Account
    attacker: Account
    admin: Account
    secrets: tuple[str, ...]  # what the attacker must never see: the victim's ids, e-mail, key prefix


async def scene(gateway: Gateway) -> Scene:
    victim, attacker, admin = await gateway.user("victim"), await gateway.user("attacker"), await gateway.admin()
    key = await gateway.create_key(victim, "victim key")
    listing = await gateway.create_listing(victim, name="victim listing")
    return Scene(victim, attacker, admin, (victim.id, victim.email, key["id"], key["prefix"], listing["id"]))


def path_attacks(text: str) -> list[tuple[str, str, dict[str, Any] | None, bool]]:
    """(method, path, body, as admin) for every /api route with a path parameter."""
    part = quote(text, safe="")
    return [
        ("PATCH", f"/api/keys/{part}", {"name": "x"}, False),
        ("DELETE", f"/api/keys/{part}", None, False),
        ("GET", f"/api/marketplace/listings/{part}", None, False),
        ("PATCH", f"/api/marketplace/listings/{part}", {"name": "x"}, False),
        ("DELETE", f"/api/marketplace/listings/{part}", None, False),
        ("GET", f"/api/marketplace/listings/{part}", None, True),
        ("GET", f"/api/billing/topups/{part}", None, False),
        ("GET", f"/api/seller/payouts/{part}", None, False),
        ("POST", f"/api/admin/payouts/{part}/mark-paid", {"reference": "r"}, True),
        ("POST", f"/api/admin/payouts/{part}/cancel", None, True),
    ]


def query_attacks(text: str) -> list[tuple[str, dict[str, str]]]:
    """(path, params) for every query parameter of every /api route, raw and inside valid cursors."""
    cursors = [text, encode_cursor(text), encode_cursor(text, text), encode_cursor("2024-01-01T00:00:00", text)]
    attacks: list[tuple[str, dict[str, str]]] = [
        ("/api/marketplace/offers", {"model": text}),
        ("/api/billing/transactions", {"limit": text}),
        ("/api/seller/payouts", {"limit": text}),
        ("/api/seller/earnings", {"since": text}),
        ("/api/seller/earnings", {"until": text}),
    ]
    for name in ("key_id", "model", "since", "until", "limit"):
        attacks.append(("/api/billing/usage", {name: text}))
    for cursor in cursors:
        for path in ("/api/billing/transactions", "/api/billing/usage", "/api/seller/payouts"):
            attacks.append((path, {"cursor": cursor}))
    return attacks


def body_attacks(text: str, key_id: str, listing_id: str) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(method, path, body, as admin): the text in every string field a body of /api takes."""
    listing = listing_body(api_key="sk-" + uuid.uuid4().hex)
    attacks: list[tuple[str, str, dict[str, Any], bool]] = [
        ("POST", "/api/auth/register", {"email": text, "password": "long enough password"}, False),
        ("POST", "/api/auth/register", {"email": unique_email(), "password": text}, False),
        ("POST", "/api/keys", {"name": text}, False),
        ("PATCH", f"/api/keys/{key_id}", {"name": text}, False),
        ("PATCH", f"/api/keys/{key_id}", {"daily_spend_cap_usd": text}, False),
        ("PATCH", f"/api/keys/{key_id}", {"routing": {"order": [text], "sort": text}}, False),
        ("POST", "/api/marketplace/quote", {"model": text, "prompt_tokens": 1}, False),
        ("POST", "/api/billing/topups", {"amount_usd": text}, False),
        ("POST", "/api/seller/payouts", {"amount_usd": text}, False),
        ("PUT", "/api/seller/payout-account", {"stripe_account_id": text}, False),
        ("POST", "/api/admin/credits", {"email": text, "amount_usd": "1", "reason": "injection"}, True),
        ("POST", "/api/admin/credits", {"email": "nobody@example.com", "amount_usd": text, "reason": text}, True),
        ("PATCH", f"/api/marketplace/listings/{listing_id}", {"status_reason": text}, True),
    ]
    for field in ("name", "base_url", "api_key"):
        attacks.append(("POST", "/api/marketplace/listings", {**listing, field: text}, False))
        attacks.append(("PATCH", f"/api/marketplace/listings/{listing_id}", {field: text}, False))
    attacks.append(("POST", "/api/marketplace/listings", {**listing, "models": [{"model": text}]}, False))
    attacks.append(("POST", "/api/marketplace/listings", {**listing, "pricing": {"multiplier": text}}, False))
    return attacks


def assert_no_leak(answer: httpx.Response, scene: Scene) -> None:
    assert_not_server_error(answer)
    for secret in scene.secrets:
        assert secret not in answer.text, f"{answer.request.url} showed {secret!r}: {answer.text[:300]}"
    if answer.status_code == 200 and "data" in answer.json():
        assert answer.json()["data"] in ([], None) or answer.request.url.path.endswith("/offers")


@pytest.mark.parametrize("text", BEARERS, ids=range(len(BEARERS)))
async def test_an_injection_as_the_bearer_key_on_v1_is_a_401(gateway: Gateway, text: str) -> None:
    header = {b"authorization": b"Bearer " + text.encode()}
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    for answer in (
        await gateway.client.post("/v1/chat/completions", json=chat, headers=header),
        await gateway.client.get("/v1/models", headers=header),
        await gateway.client.post("/v1/embeddings", json={"model": "m", "input": "x"}, headers=header),
    ):
        error = assert_error(answer, 401)
        assert error["code"] in ("invalid_api_key", "missing_api_key"), error


@pytest.mark.parametrize("text", INJECTIONS, ids=range(len(INJECTIONS)))
async def test_an_injection_in_any_path_parameter_neither_fails_nor_leaks(gateway: Gateway, text: str) -> None:
    s = await scene(gateway)
    for method, path, body, as_admin in path_attacks(text):
        auth = (s.admin if as_admin else s.attacker).auth
        answer = await gateway.client.request(method, path, json=body, headers=auth)
        assert_no_leak(answer, s)
        assert answer.status_code in (400, 404, 405), f"{method} {path}: {answer.status_code} {answer.text[:200]}"


@pytest.mark.parametrize("text", INJECTIONS, ids=range(len(INJECTIONS)))
async def test_an_injection_in_any_query_parameter_neither_fails_nor_leaks(gateway: Gateway, text: str) -> None:
    s = await scene(gateway)
    for path, params in query_attacks(text):
        answer = await gateway.client.get(path, params=params, headers=s.attacker.auth)
        assert_no_leak(answer, s)


@pytest.mark.parametrize("text", INJECTIONS, ids=range(len(INJECTIONS)))
async def test_an_injection_in_any_string_field_of_a_body_neither_fails_nor_leaks(gateway: Gateway, text: str) -> None:
    s = await scene(gateway)
    own_key = await gateway.create_key(s.attacker, "attacker key")
    own_listing = await gateway.create_listing(s.attacker, name="attacker listing")
    for method, path, body, as_admin in body_attacks(text, own_key["id"], own_listing["id"]):
        auth = (s.admin if as_admin else s.attacker).auth
        answer = await gateway.client.request(method, path, json=body, headers=auth)
        assert_no_leak(answer, s)
        if answer.status_code in (200, 201) and body.get("name") == text:
            assert answer.json()["name"] == text.strip(), "stored as data, byte for byte"
    gateway.client.cookies.clear()


@pytest.mark.parametrize("text", INJECTIONS, ids=range(len(INJECTIONS)))
async def test_an_injection_as_login_email_or_password_logs_nobody_in(
    gateway: Gateway, stranger: tuple[httpx.AsyncClient, str], text: str
) -> None:
    s = await scene(gateway)
    client, _ = stranger
    for body in ({"email": text, "password": "whatever-long"}, {"email": s.victim.email, "password": text}):
        answer = await client.post("/api/auth/login", json=body)
        assert answer.status_code in (400, 401), answer.text
        assert "access_token" not in answer.text


async def test_every_table_is_still_there_after_the_injections(gateway: Gateway) -> None:
    db = gateway.app.state.services.db
    for table in TABLES:
        assert await db.fetchval("SELECT to_regclass($1)", table) is not None, table
    assert await db.fetchval("SELECT count(*) FROM users") > 0
    assert await db.fetchval("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL") > 0
