"""The session routes, mounted under `/api`: logout, password changes, a user's sessions, an admin's
"end this user's sessions".

Every end is committed in Postgres first, then announced (sessioncache.py), so every process
refuses the token within about a second; the token itself is never shown or logged, sessions are
named by their row's id. Ending another user's session is 404, as for any object one does not own.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from aichat_gateway.accounts import sessions, users
from aichat_gateway.accounts.api import clear_session_cookies, client_ip, deps, json_response
from aichat_gateway.accounts.backend import CSRF_REJECTED, SessionUser, require_admin, require_user
from aichat_gateway.accounts.bodies import read_body
from aichat_gateway.accounts.errors import InvalidCredentials, NotFound, WrongPassword
from aichat_gateway.accounts.login import log_out
from aichat_gateway.accounts.loginlimit import LoginLimiter
from aichat_gateway.accounts.passwords import Passwords, check_password_policy
from aichat_gateway.accounts.schemas import PasswordChange, SessionList
from aichat_gateway.apiroute import ApiRoute, Auth, api_route
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)


class SessionsApi:
    def __init__(self, passwords: Passwords | None = None) -> None:
        self._passwords = passwords or Passwords()

    async def logout(self, request: Request) -> Response:
        """End the session presented (bearer or cookie) and forget the cookies. Without a session
        (none, or a stale cookie) there is nothing to end: 204 all the same. A cookie without its
        CSRF header is 403, as for every unsafe call: a hostile page cannot end a session."""
        d = deps(request)
        user = request.scope.get("user")
        auth = request.scope.get("auth")
        if not isinstance(user, SessionUser) and auth is not None and CSRF_REJECTED in auth.scopes:
            require_user(request)  # raises Forbidden (403)
        if isinstance(user, SessionUser):
            await log_out(d, user)
        response = Response(status_code=204)
        clear_session_cookies(response, d.settings)
        return response

    async def change_password(self, request: Request) -> Response:
        """`{"current_password", "new_password"}`: every other session of the user ends; this one stays.

        A wrong current password counts against the account's login limit (one budget for login and
        this), so a stolen session cannot be used to guess the password.
        """
        session = require_user(request)
        body = await read_body(request, PasswordChange)
        current, new = body.current_password, body.new_password
        check_password_policy(new, param="new_password")  # refused before anything is counted
        d = deps(request)
        user = await users.get_by_id(d.db, session.id)
        if user is None:
            raise InvalidCredentials("this account no longer exists")
        limiter = LoginLimiter(d.redis, d.settings.redis_prefix)
        attempt = await limiter.attempt(user.email, client_ip(request))
        try:
            await users.change_password(
                d.db, self._passwords, user.id, current, new, keep_token_id=session.token_id, now=d.clock()
            )
        except WrongPassword:
            log.info("password_change_refused", user_id=user.id)
            raise
        await limiter.succeeded(attempt)
        await d.sessions.announce_user_ended(user.id)
        return Response(status_code=204)

    async def list_sessions(self, request: Request) -> Response:
        session = require_user(request)
        d = deps(request)
        found = await sessions.live(d.db, session.id, d.clock())
        return json_response({"data": [s.public(session.token_id) for s in found]})

    async def end_session(self, request: Request) -> Response:
        session = require_user(request)
        d = deps(request)
        token_id = await sessions.end_one(d.db, session.id, request.path_params["session_id"], d.clock())
        await d.sessions.announce_ended(token_id)
        log.info("session_ended", user_id=session.id, reason="ended_by_user")
        response = Response(status_code=204)
        if token_id == session.token_id:
            clear_session_cookies(response, d.settings)
        return response

    async def admin_end_sessions(self, request: Request) -> Response:
        """Admin: end every session of a user (a stolen laptop, a leaving employee); 404 for no such user."""
        admin = require_admin(request)
        d = deps(request)
        # Canonical spelling: every process's cache matches the announced id against its own.
        user_id = await sessions.existing_user_id(d.db, request.path_params["user_id"])
        if user_id is None:
            raise NotFound("no such user", param="user_id")
        ended = await sessions.end_all(d.db, user_id, d.clock())
        await d.sessions.announce_user_ended(user_id)
        log.info("sessions_ended_by_admin", user_id=user_id, admin_id=admin.id, sessions_ended=ended)
        return Response(status_code=204)


def routes() -> list[ApiRoute]:
    api = SessionsApi()
    return [
        api_route(
            "POST",
            "/auth/logout",
            api.logout,
            operation_id="logout",
            summary="End the session presented (bearer or cookie) in every process, and forget the cookies",
            tag="accounts",
            answers={204: None},
            auth=Auth.OPTIONAL_SESSION,
        ),
        api_route(
            "POST",
            "/auth/password",
            api.change_password,
            operation_id="changePassword",
            summary="Change the password; every other session of the user ends (a wrong current password "
            "counts against the login limit)",
            tag="accounts",
            body=PasswordChange,
            answers={204: None},
            auth=Auth.SESSION,
            errors=(429,),
        ),
        api_route(
            "GET",
            "/auth/sessions",
            api.list_sessions,
            operation_id="listSessions",
            summary="The caller's live sessions, the current one flagged (no tokens)",
            tag="accounts",
            answers={200: SessionList},
            auth=Auth.SESSION,
        ),
        api_route(
            "DELETE",
            "/auth/sessions/{session_id}",
            api.end_session,
            operation_id="endSession",
            summary="End one of the caller's sessions",
            tag="accounts",
            answers={204: None},
            auth=Auth.SESSION,
            errors=(404,),
        ),
        api_route(
            "POST",
            "/admin/users/{user_id}/sessions/revoke",
            api.admin_end_sessions,
            operation_id="endUserSessions",
            summary="Admin: end every session of a user, in every process",
            tag="admin",
            answers={204: None},
            auth=Auth.ADMIN,
            errors=(404,),
        ),
    ]
