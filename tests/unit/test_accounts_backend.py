"""SessionBackend on hand-built ASGI scopes: bearer, cookie, CSRF and the error response shape."""

from __future__ import annotations

from http.cookies import SimpleCookie

import orjson
import pytest
from starlette.authentication import AuthenticationError
from starlette.requests import HTTPConnection

from aichat_gateway.accounts.backend import (
    CSRF_REJECTED,
    SessionBackend,
    SessionUser,
    auth_error_response,
    require_admin,
    require_user,
)
from aichat_gateway.accounts.errors import Forbidden, InvalidCredentials, StoreUnavailable
from aichat_gateway.accounts.tokens import IssuedToken, SessionClaims, SessionTokens
from aichat_gateway.config.settings import Settings, load_settings

SECRET = "unit-test-secret-" + "s" * 32


@pytest.fixture
def unit_settings() -> Settings:
    return load_settings(GATEWAY_SECRET_KEY=SECRET)


@pytest.fixture
def issued(unit_settings: Settings) -> IssuedToken:
    return SessionTokens.from_settings(unit_settings).issue("8d3c2f6e-0000-4000-8000-000000000001", "user")


def conn(
    method: str = "GET",
    headers: dict[str, str] | None = None,
    cookies: dict[str, str] | None = None,
    kind: str = "http",
) -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if cookies:
        jar = SimpleCookie()
        for name, value in cookies.items():
            jar[name] = value
        raw.append((b"cookie", "; ".join(f"{m.key}={m.value}" for m in jar.values()).encode()))
    scope = {"type": kind, "method": method, "path": "/keys", "headers": raw, "query_string": b""}
    return HTTPConnection(scope)


async def test_no_credentials_means_anonymous(unit_settings: Settings) -> None:
    assert await SessionBackend(unit_settings).authenticate(conn()) is None


async def test_a_bearer_token_authenticates_with_the_role_as_a_scope(
    unit_settings: Settings, issued: IssuedToken
) -> None:
    result = await SessionBackend(unit_settings).authenticate(
        conn("POST", headers={"Authorization": f"Bearer {issued.token}"})
    )
    assert result is not None
    credentials, user = result
    assert set(credentials.scopes) == {"authenticated", "user"}
    assert user.is_authenticated and user.identity == issued.claims.user_id


async def test_a_bad_bearer_token_is_an_authentication_error(unit_settings: Settings) -> None:
    with pytest.raises(AuthenticationError):
        await SessionBackend(unit_settings).authenticate(conn(headers={"Authorization": "Bearer a.b.c"}))


async def test_a_gateway_key_presented_as_bearer_is_an_authentication_error(unit_settings: Settings) -> None:
    with pytest.raises(AuthenticationError):
        await SessionBackend(unit_settings).authenticate(conn(headers={"Authorization": "Bearer agw-" + "A" * 43}))


async def test_a_session_cookie_authenticates_a_get(unit_settings: Settings, issued: IssuedToken) -> None:
    result = await SessionBackend(unit_settings).authenticate(conn(cookies={"aichat_session": issued.token}))
    assert result is not None and result[1].is_authenticated


async def test_a_stale_session_cookie_means_anonymous(unit_settings: Settings) -> None:
    assert await SessionBackend(unit_settings).authenticate(conn(cookies={"aichat_session": "x.y.z"})) is None


async def test_a_cookie_post_without_the_csrf_header_is_not_authenticated(
    unit_settings: Settings, issued: IssuedToken
) -> None:
    cookies = {"aichat_session": issued.token, "aichat_csrf": issued.csrf_token}
    result = await SessionBackend(unit_settings).authenticate(conn("POST", cookies=cookies))
    assert result is not None
    credentials, user = result
    assert not user.is_authenticated and CSRF_REJECTED in credentials.scopes


async def test_a_cookie_post_with_a_csrf_header_of_another_session_is_not_authenticated(
    unit_settings: Settings, issued: IssuedToken
) -> None:
    other = SessionTokens.from_settings(unit_settings).issue(issued.claims.user_id, "user")
    cookies = {"aichat_session": issued.token, "aichat_csrf": other.csrf_token}
    result = await SessionBackend(unit_settings).authenticate(
        conn("POST", headers={"x-csrf-token": other.csrf_token}, cookies=cookies)
    )
    assert result is not None and not result[1].is_authenticated


async def test_a_cookie_post_with_the_matching_csrf_header_is_authenticated(
    unit_settings: Settings, issued: IssuedToken
) -> None:
    cookies = {"aichat_session": issued.token, "aichat_csrf": issued.csrf_token}
    result = await SessionBackend(unit_settings).authenticate(
        conn("DELETE", headers={"x-csrf-token": issued.csrf_token}, cookies=cookies)
    )
    assert result is not None and result[1].is_authenticated


async def test_a_cookie_websocket_from_another_origin_is_not_authenticated(
    unit_settings: Settings, issued: IssuedToken
) -> None:
    c = conn(
        headers={"origin": "https://evil.example", "host": "gw.example"},
        cookies={"aichat_session": issued.token},
        kind="websocket",
    )
    result = await SessionBackend(unit_settings).authenticate(c)
    assert result is not None and not result[1].is_authenticated


def test_the_error_response_has_the_openai_shape_and_a_401() -> None:
    from aichat_gateway.accounts.backend import SessionAuthError

    response = auth_error_response(conn(), SessionAuthError(InvalidCredentials("invalid session token")))
    assert response.status_code == 401
    assert orjson.loads(response.body) == {
        "error": {
            "message": "invalid session token",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_credentials",
        }
    }


def test_require_user_refuses_an_anonymous_request() -> None:
    c = conn()
    c.scope["user"] = None
    with pytest.raises(InvalidCredentials):
        require_user(c)


def test_require_user_answers_a_failed_csrf_check_with_forbidden() -> None:
    from starlette.authentication import AuthCredentials, UnauthenticatedUser

    c = conn("POST")
    c.scope["auth"], c.scope["user"] = AuthCredentials([CSRF_REJECTED]), UnauthenticatedUser()
    with pytest.raises(Forbidden):
        require_user(c)


def test_require_admin_refuses_a_plain_user() -> None:
    c = conn()
    c.scope["user"] = SessionUser("u", "user")
    with pytest.raises(Forbidden):
        require_admin(c)


def test_require_admin_accepts_an_admin() -> None:
    c = conn()
    c.scope["user"] = SessionUser("u", "admin")
    assert require_admin(c).identity == "u"


async def test_a_bearer_token_whose_session_ended_is_an_authentication_error(
    unit_settings: Settings, issued: IssuedToken
) -> None:
    async def ended(conn: HTTPConnection, claims: SessionClaims) -> str | None:
        return None

    backend = SessionBackend(unit_settings, session_of=ended)
    with pytest.raises(AuthenticationError):
        await backend.authenticate(conn(headers={"Authorization": f"Bearer {issued.token}"}))


async def test_a_cookie_whose_session_ended_means_anonymous(unit_settings: Settings, issued: IssuedToken) -> None:
    async def ended(conn: HTTPConnection, claims: SessionClaims) -> str | None:
        return None

    backend = SessionBackend(unit_settings, session_of=ended)
    assert await backend.authenticate(conn(cookies={"aichat_session": issued.token})) is None


async def test_the_session_check_sees_the_tokens_id_and_its_answer_is_the_role(
    unit_settings: Settings, issued: IssuedToken
) -> None:
    seen: list[str] = []

    async def promoted(conn: HTTPConnection, claims: SessionClaims) -> str | None:
        seen.append(claims.token_id)
        return "admin"

    backend = SessionBackend(unit_settings, session_of=promoted)
    result = await backend.authenticate(conn(headers={"Authorization": f"Bearer {issued.token}"}))
    assert result is not None
    credentials, user = result
    assert seen == [issued.claims.token_id]
    assert "admin" in credentials.scopes and isinstance(user, SessionUser) and user.token_id == seen[0]


def test_an_unavailable_session_store_is_a_503() -> None:
    from aichat_gateway.accounts.backend import SessionAuthError

    response = auth_error_response(conn(), SessionAuthError(StoreUnavailable("cannot check the session right now")))
    assert response.status_code == 503
