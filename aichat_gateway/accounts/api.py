"""The accounts REST API, mounted under `/api`: registration, login, the current user, keys.

Logout, password changes and the session lists are in session_api.py (its own `routes()`).

Dependencies (settings, db, redis, the key cache, the key-routing validator) come from the app
state at request time; the only long-lived object made here is `Passwords` (it keeps the dummy
hash), created once per app by `routes()`. Errors are raised as accounts errors; proxy/edge.py
turns them into OpenAI-shaped responses. Nothing secret is logged: user and key ids only.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from aichat_gateway.accounts import keys as keys_repo
from aichat_gateway.accounts import keyservice, sessionkeys, users
from aichat_gateway.accounts.backend import CSRF_COOKIE, SESSION_COOKIE, require_user
from aichat_gateway.accounts.bodies import read_body
from aichat_gateway.accounts.errors import InvalidCredentials
from aichat_gateway.accounts.login import log_in
from aichat_gateway.accounts.passwords import Passwords
from aichat_gateway.accounts.schemas import (
    CreatedKey,
    Credentials,
    Key,
    KeyCreate,
    KeyList,
    KeyPatch,
    Registration,
    Session,
    SessionKey,
    User,
)
from aichat_gateway.accounts.services import AccountsServices, services
from aichat_gateway.accounts.tokens import IssuedToken
from aichat_gateway.apiroute import ApiRoute, Auth, api_route
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.settings import Settings

log = get_logger(__name__)


def deps(request: Request) -> AccountsServices:
    """What the handlers need: the services of the app serving this request."""
    return services(request)


def json_response(data: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status_code, media_type="application/json")


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def set_session_cookies(response: Response, issued: IssuedToken, settings: Settings) -> None:
    common: dict[str, Any] = {
        "max_age": issued.expires_in,
        "path": "/",
        "secure": settings.cookie_secure,
        "samesite": "lax",
    }
    response.set_cookie(SESSION_COOKIE, issued.token, httponly=True, **common)
    # Readable by the dashboard's script on purpose: it echoes it in x-csrf-token.
    response.set_cookie(CSRF_COOKIE, issued.csrf_token, httponly=False, **common)


def clear_session_cookies(response: Response, settings: Settings) -> None:
    for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", secure=settings.cookie_secure, httponly=httponly, samesite="lax")


class AccountsApi:
    def __init__(self, passwords: Passwords | None = None) -> None:
        self._passwords = passwords or Passwords()

    async def register(self, request: Request) -> Response:
        body = await read_body(request, Registration)
        d = deps(request)
        user = await users.create_user(d.db, self._passwords, body.email, body.password)
        return json_response(user.public(), status_code=201)

    async def login(self, request: Request) -> Response:
        body = await read_body(request, Credentials)
        done = await log_in(
            deps(request),
            self._passwords,
            body.email,
            body.password,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
        )
        issued = done.issued
        response = json_response(
            {"access_token": issued.token, "token_type": "bearer", "expires_in": issued.expires_in}
        )
        response.headers["cache-control"] = "no-store"
        set_session_cookies(response, issued, deps(request).settings)
        return response

    async def me(self, request: Request) -> Response:
        session = require_user(request)
        user = await users.get_by_id(deps(request).db, session.id)
        if user is None:
            raise InvalidCredentials("this account no longer exists")
        return json_response(user.public())

    async def create_key(self, request: Request) -> Response:
        session = require_user(request)
        body = await read_body(request, KeyCreate)
        created = await keyservice.create_key(deps(request), session.id, body, ip=client_ip(request))
        return json_response(created.public(), status_code=201)

    async def update_key(self, request: Request) -> Response:
        """PATCH: name and settings only (the allow-list); every process serves the new settings at once."""
        session = require_user(request)
        body = await read_body(request, KeyPatch)
        key = await keyservice.change_key(
            deps(request), session.id, request.path_params["key_id"], body, ip=client_ip(request)
        )
        return json_response(key.public())

    async def list_keys(self, request: Request) -> Response:
        session = require_user(request)
        found = await keys_repo.list_keys(deps(request).db, session.id)
        return json_response({"data": [k.public() for k in found]})

    async def revoke_key(self, request: Request) -> Response:
        session = require_user(request)
        await keyservice.revoke_key(deps(request), session.id, request.path_params["key_id"], ip=client_ip(request))
        return Response(status_code=204)

    async def session_key(self, request: Request) -> Response:
        """The gateway key of the caller's session, for its own /v1 calls: the same key on every
        call in one session; it expires with the session and stops when the session ends."""
        session = require_user(request)
        if session.token_id is None:
            raise InvalidCredentials("authentication required")
        d = deps(request)
        found = await sessionkeys.session_key(d.db, d.settings, session.id, session.token_id)
        if found.replaced_hash is not None:
            await d.keys.announce_revoked(found.replaced_hash)
        response = json_response(found.public())
        response.headers["cache-control"] = "no-store"
        return response


def routes() -> list[ApiRoute]:
    api = AccountsApi()
    return [
        api_route(
            "POST",
            "/auth/register",
            api.register,
            operation_id="register",
            summary="Create an account",
            tag="accounts",
            body=Registration,
            answers={201: User},
            errors=(409,),
        ),
        api_route(
            "POST",
            "/auth/login",
            api.login,
            operation_id="login",
            summary="Log in: a bearer token, and the session and CSRF cookies for browsers",
            tag="accounts",
            body=Credentials,
            answers={200: Session},
            errors=(401, 429, 503),
        ),
        api_route(
            "GET",
            "/auth/me",
            api.me,
            operation_id="me",
            summary="The signed-in user",
            tag="accounts",
            answers={200: User},
            auth=Auth.SESSION,
        ),
        api_route(
            "POST",
            "/auth/session-key",
            api.session_key,
            operation_id="sessionKey",
            summary="The gateway key of this session, for its own /v1 calls (same key per session; "
            "it expires with the session and stops when the session ends)",
            tag="accounts",
            answers={200: SessionKey},
            auth=Auth.SESSION,
        ),
        api_route(
            "POST",
            "/keys",
            api.create_key,
            operation_id="createKey",
            summary="Create a gateway key",
            tag="keys",
            body=KeyCreate,
            answers={201: CreatedKey},
            auth=Auth.SESSION,
        ),
        api_route(
            "GET",
            "/keys",
            api.list_keys,
            operation_id="listKeys",
            summary="The caller's keys (no secrets)",
            tag="keys",
            answers={200: KeyList},
            auth=Auth.SESSION,
        ),
        api_route(
            "PATCH",
            "/keys/{key_id}",
            api.update_key,
            operation_id="updateKey",
            summary="Change a key's name or settings",
            tag="keys",
            body=KeyPatch,
            answers={200: Key},
            auth=Auth.SESSION,
            errors=(404,),
        ),
        api_route(
            "DELETE",
            "/keys/{key_id}",
            api.revoke_key,
            operation_id="revokeKey",
            summary="Revoke a key",
            tag="keys",
            answers={204: None},
            auth=Auth.SESSION,
            errors=(404,),
        ),
    ]
