"""Who is calling `/api/*`: the session JWT from a bearer header or from the browser's cookie.

- `Authorization: Bearer <jwt>` (API clients): a bad or expired token is a 401 right here, since
  the caller explicitly presented it.
- Cookie `aichat_session` (browsers): a bad or expired cookie just means "anonymous" (a stale
  cookie must never stop anyone from logging in again). Browsers attach cookies to cross-site
  requests, so unsafe methods also need the CSRF token: header `x-csrf-token` equal to cookie
  `aichat_csrf`, and that value must be the HMAC of this session's id (signed double-submit). A
  request that fails this is anonymous with the scope `csrf_rejected`; `require_user` answers it
  with 403, and any route that checks `"authenticated" in request.auth.scopes` refuses it anyway.

A valid signature is not enough: with `session_of` (the app wires `live_session_role`), the token
must still be a live server-side session (sessions.py: ended by logout, a password change,
`create-admin` or an admin; checked through the session cache, sessioncache.py), the user must
still exist and their role is the stored one, so an ended session and a deleted account's tokens
stop working at once (401, not a session whose writes fail on foreign keys) and a demoted admin
loses the role at once. Postgres unreachable and nothing cached to answer: 503.

Other packages read only standard Starlette fields: `request.user.identity` (the user id),
`request.user.is_authenticated` and `request.auth.scopes` (`"authenticated"` plus the role).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import orjson
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    UnauthenticatedUser,
)
from starlette.requests import HTTPConnection
from starlette.responses import Response

from aichat_gateway.accounts.errors import AccountsError, Forbidden, InvalidCredentials, StoreUnavailable
from aichat_gateway.accounts.services import services
from aichat_gateway.accounts.tokens import SessionClaims, SessionTokens
from aichat_gateway.config.settings import Settings

SESSION_COOKIE = "aichat_session"
CSRF_COOKIE = "aichat_csrf"
CSRF_HEADER = "x-csrf-token"
AUTHENTICATED = "authenticated"
CSRF_REJECTED = "csrf_rejected"
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The current role of a live session's user; None if the session ended or the user is gone.
SessionCheck = Callable[[HTTPConnection, SessionClaims], Awaitable[str | None]]


async def live_session_role(conn: HTTPConnection, claims: SessionClaims) -> str | None:
    """SessionCheck on the session cache (`state.sessions`) of the app serving the request."""
    try:
        role: str | None = await services(conn).sessions.role_of(claims)
    except StoreUnavailable as exc:
        raise SessionAuthError(exc) from None
    return role


class SessionUser(BaseUser):
    def __init__(self, id: str, role: str, email: str | None = None, token_id: str | None = None) -> None:
        self.id = id
        self.role = role
        self.email = email
        # The session's `jti`: which server-side session this request rides (logout ends it).
        self.token_id = token_id

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.email or self.id

    @property
    def identity(self) -> str:
        return self.id

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def __repr__(self) -> str:
        return f"SessionUser(id={self.id!r}, role={self.role!r})"


class SessionAuthError(AuthenticationError):
    """Carries the accounts error into AuthenticationMiddleware's `on_error`."""

    def __init__(self, error: AccountsError) -> None:
        super().__init__(error.message)
        self.error = error


def csrf_required(method: str, via_cookie: bool) -> bool:
    """Pure: only ambient (cookie) credentials on state-changing methods need the CSRF token."""
    return via_cookie and method.upper() not in _SAFE_METHODS


def same_origin(origin: str | None, host: str | None) -> bool:
    """Pure: does a WebSocket handshake's Origin name the host it was sent to?"""
    if not origin or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


def bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SessionAuthError(InvalidCredentials("expected 'Authorization: Bearer <session token>'"))
    token = token.strip()
    if token.startswith("agw-"):
        raise SessionAuthError(InvalidCredentials("gateway API keys work on /v1; /api takes the session token"))
    return token


class SessionBackend(AuthenticationBackend):
    def __init__(
        self, settings: Settings, *, clock: Callable[[], float] = time.time, session_of: SessionCheck | None = None
    ) -> None:
        self._tokens = SessionTokens.from_settings(settings, clock=clock)
        self._session_of = session_of

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        authorization = conn.headers.get("authorization")
        if authorization is not None:
            token = bearer_token(authorization)
            try:
                claims = self._tokens.decode(token)
            except InvalidCredentials as exc:
                raise SessionAuthError(exc) from None
            role = await self._current_role(conn, claims)
            if role is None:
                raise SessionAuthError(InvalidCredentials("this account no longer exists"))
            return _authenticated(claims, role)

        cookie = conn.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        try:
            claims = self._tokens.decode(cookie)
        except InvalidCredentials:
            return None  # stale cookie: anonymous, so /auth/login still works
        if not self._cookie_request_is_same_site(conn, claims):
            return AuthCredentials([CSRF_REJECTED]), UnauthenticatedUser()
        role = await self._current_role(conn, claims)
        if role is None:
            return None  # the account is gone: as stale as an expired cookie
        return _authenticated(claims, role)

    async def _current_role(self, conn: HTTPConnection, claims: SessionClaims) -> str | None:
        if self._session_of is None:
            return claims.role  # signature and times only (unit tests of the token checks)
        return await self._session_of(conn, claims)

    def _cookie_request_is_same_site(self, conn: HTTPConnection, claims: SessionClaims) -> bool:
        if conn.scope["type"] == "websocket":
            # Browsers cannot set headers on a WebSocket handshake, but they do send Origin.
            return same_origin(conn.headers.get("origin"), conn.headers.get("host"))
        if not csrf_required(conn.scope.get("method", "GET"), via_cookie=True):
            return True
        header = conn.headers.get(CSRF_HEADER, "")
        cookie = conn.cookies.get(CSRF_COOKIE, "")
        return bool(header) and header == cookie and self._tokens.csrf_matches(claims, header)


def _authenticated(claims: SessionClaims, role: str) -> tuple[AuthCredentials, BaseUser]:
    return AuthCredentials([AUTHENTICATED, role]), SessionUser(claims.user_id, role, token_id=claims.token_id)


def _status_of(error: AccountsError) -> tuple[int, str]:
    if isinstance(error, Forbidden):
        return 403, "permission_error"
    if isinstance(error, StoreUnavailable):
        return 503, "api_error"
    return 401, "authentication_error"


def auth_error_response(conn: HTTPConnection, exc: Exception) -> Response:
    """AuthenticationMiddleware's `on_error`: an OpenAI-shaped JSON error.

    Built here rather than with proxy/edge.py's helper because accounts must not import proxy.
    """
    error = exc.error if isinstance(exc, SessionAuthError) else InvalidCredentials("invalid credentials")
    status, type_ = _status_of(error)
    body = orjson.dumps({"error": {"message": error.message, "type": type_, "param": error.param, "code": error.code}})
    headers = {"www-authenticate": 'Bearer realm="api"'} if status == 401 else {}
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def require_user(conn: HTTPConnection) -> SessionUser:
    """The signed-in user, or InvalidCredentials (401) / Forbidden (403, failed CSRF check)."""
    user = conn.scope.get("user")
    if isinstance(user, SessionUser):
        return user
    auth = conn.scope.get("auth")
    if auth is not None and CSRF_REJECTED in auth.scopes:
        raise Forbidden(f"missing or invalid {CSRF_HEADER} header (send the {CSRF_COOKIE} cookie's value)")
    raise InvalidCredentials("authentication required")


def require_admin(conn: HTTPConnection) -> SessionUser:
    user = require_user(conn)
    if not user.is_admin:
        raise Forbidden("admin role required")
    return user
