"""Forged, tampered and stale session tokens on /api: every one is a 401, never a session."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Any

import orjson
import pytest

from aichat_gateway.accounts.tokens import SessionTokens, derive_key
from tests.support.attack import Account, Gateway, assert_error

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

PROTECTED = (("GET", "/api/auth/me"), ("GET", "/api/keys"), ("GET", "/api/billing/balance"))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict[str, Any]:
    payload: dict[str, Any] = orjson.loads(unb64(token.split(".")[1]))
    return payload


def hs256(header: dict[str, Any], payload: dict[str, Any], key: bytes) -> str:
    signing_input = f"{b64(orjson.dumps(header))}.{b64(orjson.dumps(payload))}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def fresh_claims(user: Account, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"sub": user.id, "role": user.role, "iat": now, "exp": now + 600, "jti": secrets.token_urlsafe(16)}
    claims.update(changes)
    return claims


async def assert_refused_everywhere(gateway: Gateway, token: str) -> None:
    for method, path in PROTECTED:
        answer = await gateway.client.request(method, path, headers={"Authorization": f"Bearer {token}"})
        error = assert_error(answer, 401)
        assert error["type"] == "authentication_error"
        assert answer.headers.get("www-authenticate", "").lower().startswith("bearer")


async def test_a_token_whose_payload_was_edited_to_say_admin_is_refused(gateway: Gateway) -> None:
    user = await gateway.user()
    header, _, signature = user.token.split(".")
    forged = b64(orjson.dumps({**claims_of(user.token), "role": "admin"}))
    await assert_refused_everywhere(gateway, f"{header}.{forged}.{signature}")


async def test_a_token_naming_another_user_with_the_original_signature_is_refused(gateway: Gateway) -> None:
    mallory, victim = await gateway.user("mallory"), await gateway.user("victim")
    header, _, signature = mallory.token.split(".")
    forged = b64(orjson.dumps({**claims_of(mallory.token), "sub": victim.id}))
    await assert_refused_everywhere(gateway, f"{header}.{forged}.{signature}")


async def test_a_token_signed_with_another_key_is_refused(gateway: Gateway) -> None:
    user = await gateway.user()
    other = SessionTokens(["another-secret-key-" + "y" * 32], 600)
    await assert_refused_everywhere(gateway, other.issue(user.id, "admin").token)


async def test_a_token_signed_with_the_master_secret_itself_is_refused(gateway: Gateway) -> None:
    """Session keys are derived from the master secret (HKDF); the raw secret signs nothing valid."""
    user = await gateway.user()
    master = gateway.app.state.settings.secret_keys[0].encode()
    await assert_refused_everywhere(gateway, hs256({"alg": "HS256", "typ": "JWT"}, fresh_claims(user), master))


async def test_a_token_signed_with_the_key_of_another_purpose_is_refused(gateway: Gateway) -> None:
    user = await gateway.user()
    csrf_key = derive_key(gateway.app.state.settings.secret_keys[0], "session-csrf")
    await assert_refused_everywhere(gateway, hs256({"alg": "HS256", "typ": "JWT"}, fresh_claims(user), csrf_key))


async def test_a_token_signed_with_an_empty_key_is_refused(gateway: Gateway) -> None:
    user = await gateway.user()
    await assert_refused_everywhere(gateway, hs256({"alg": "HS256", "typ": "JWT"}, fresh_claims(user), b""))


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
async def test_an_unsigned_alg_none_token_is_refused(gateway: Gateway, alg: str) -> None:
    user = await gateway.user()
    header = b64(orjson.dumps({"alg": alg, "typ": "JWT"}))
    payload = b64(orjson.dumps(fresh_claims(user, role="admin")))
    for token in (f"{header}.{payload}.", f"{header}.{payload}", f"{header}.{payload}.{user.token.split('.')[2]}"):
        await assert_refused_everywhere(gateway, token)


@pytest.mark.parametrize("alg", ["HS384", "HS512", "RS256", "ES256"])
async def test_a_token_claiming_another_algorithm_is_refused(gateway: Gateway, alg: str) -> None:
    user = await gateway.user()
    key = derive_key(gateway.app.state.settings.secret_keys[0], "session-jwt")
    await assert_refused_everywhere(gateway, hs256({"alg": alg, "typ": "JWT"}, fresh_claims(user), key))


async def test_an_expired_token_is_refused(gateway: Gateway) -> None:
    user = await gateway.user()
    an_hour_ago = time.time() - 3600
    expired = SessionTokens(gateway.app.state.settings.secret_keys, 60, clock=lambda: an_hour_ago)
    await assert_refused_everywhere(gateway, expired.issue(user.id, "user").token)


async def test_a_token_issued_in_the_future_is_refused(gateway: Gateway) -> None:
    user = await gateway.user()
    tomorrow = time.time() + 86_400
    future = SessionTokens(gateway.app.state.settings.secret_keys, 3600, clock=lambda: tomorrow)
    await assert_refused_everywhere(gateway, future.issue(user.id, "user").token)


async def test_a_token_with_an_unknown_role_is_refused(gateway: Gateway) -> None:
    user = await gateway.user()
    key = derive_key(gateway.app.state.settings.secret_keys[0], "session-jwt")
    await assert_refused_everywhere(gateway, hs256({"alg": "HS256"}, fresh_claims(user, role="superuser"), key))


@pytest.mark.parametrize(
    "garbage", ["", " ", "a.b.c", "..", "x" * 5000, "eyJ\x00.e30.", "Bearer", "\u2019.\u2019.\u2019"]
)
async def test_a_malformed_token_is_a_401_not_a_500(gateway: Gateway, garbage: str) -> None:
    header = f"Bearer {garbage}".encode()  # raw UTF-8 octets, as a hostile client would send them
    answer = await gateway.client.get("/api/keys", headers={b"authorization": header})
    assert_error(answer, 401)


async def test_a_token_of_a_deleted_user_is_refused(gateway: Gateway) -> None:
    user = await gateway.user("deleted")
    await gateway.app.state.services.db.execute("DELETE FROM users WHERE id = $1::uuid", user.id)
    await assert_refused_everywhere(gateway, user.token)
    created = await gateway.client.post("/api/keys", json={"name": "ghost"}, headers=user.auth)
    assert_error(created, 401)


async def test_a_forged_session_cookie_is_anonymous_not_a_session(gateway: Gateway) -> None:
    user = await gateway.user()
    header, _, signature = user.token.split(".")
    forged = f"{header}.{b64(orjson.dumps({**claims_of(user.token), 'role': 'admin'}))}.{signature}"
    gateway.client.cookies.set("aichat_session", forged)
    try:
        assert_error(await gateway.client.get("/api/keys"), 401)
    finally:
        gateway.client.cookies.clear()


async def test_an_admin_demoted_in_the_database_loses_the_role_their_token_still_claims(gateway: Gateway) -> None:
    admin = await gateway.admin()
    before = await gateway.client.post("/api/admin/credits", json={}, headers=admin.auth)
    assert_error(before, 400)  # past the admin check, refused for the empty body
    await gateway.app.state.services.db.execute("UPDATE users SET role = 'user' WHERE id = $1::uuid", admin.id)
    after = await gateway.client.post("/api/admin/credits", json={}, headers=admin.auth)
    assert_error(after, 403)


async def test_a_validly_signed_token_that_no_login_issued_is_refused(gateway: Gateway) -> None:
    """A leaked signing key aside, a token is a session only while the server has its session:
    one minted without a login (no session row) is no session."""
    user = await gateway.user()
    minted = SessionTokens.from_settings(gateway.app.state.settings).issue(user.id, user.role)
    await assert_refused_everywhere(gateway, minted.token)


async def test_a_token_replayed_after_logout_is_refused(gateway: Gateway) -> None:
    user = await gateway.user()
    assert (await gateway.client.post("/api/auth/logout", headers=user.auth)).status_code == 204
    await assert_refused_everywhere(gateway, user.token)
    gateway.client.cookies.set("aichat_session", user.token)
    try:
        assert_error(await gateway.client.get("/api/keys"), 401)
    finally:
        gateway.client.cookies.clear()
