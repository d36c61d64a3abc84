"""Logging in and out, shared by the REST API (`/api/auth/login`, `/api/auth/logout`) and the
dashboard's pages, so both count failures against the same limit and start and end the same
server-side sessions.
"""

from __future__ import annotations

from dataclasses import dataclass

from aichat_gateway import audittrail
from aichat_gateway.accounts import sessions, users
from aichat_gateway.accounts.backend import SessionUser
from aichat_gateway.accounts.errors import AccountDisabled, InvalidCredentials
from aichat_gateway.accounts.loginlimit import LoginLimiter
from aichat_gateway.accounts.passwords import Passwords
from aichat_gateway.accounts.services import AccountsServices
from aichat_gateway.accounts.tokens import IssuedToken, SessionTokens
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class LoggedIn:
    user: users.User
    issued: IssuedToken


async def log_in(
    svc: AccountsServices,
    passwords: Passwords,
    email: str,
    password: str,
    *,
    ip: str | None,
    user_agent: str | None,
) -> LoggedIn:
    """Check the password under the login limit and start a session.

    Raises InvalidCredentials (wrong e-mail or password, or an address refused by the e-mail rule),
    TooManyAttempts (the limit) or StoreUnavailable.
    """
    # Refused on the text alone, before anything is counted or looked up: a look-alike of a locked
    # address (Unicode folded differently here and in Postgres) must not get through.
    email = users.canonical_email(email)
    limiter = LoginLimiter(svc.redis, svc.settings.redis_prefix)
    attempt = await limiter.attempt(email, ip)
    try:
        user = await users.authenticate(svc.db, passwords, email, password)
    except InvalidCredentials as exc:
        log.info("login_failed")
        known = await users.get_by_email(svc.db, email)
        subject = known.id if known is not None else None
        detail = {"reason": "account disabled"} if isinstance(exc, AccountDisabled) else None
        await audittrail.record(svc.db, audittrail.LOGIN_FAILED, subject_id=subject, ip=ip, detail=detail)
        raise
    await limiter.succeeded(attempt)
    issued = SessionTokens.from_settings(svc.settings).issue(user.id, user.role)
    # The token is a session only while this row says so (logout and password changes end it).
    await sessions.start(svc.db, issued.claims, user_agent=user_agent, ip=ip)
    await audittrail.record(svc.db, audittrail.LOGIN_SUCCEEDED, subject_id=user.id, actor_id=user.id, ip=ip)
    log.info("login_succeeded", user_id=user.id)
    return LoggedIn(user, issued)


async def log_out(svc: AccountsServices, user: SessionUser) -> None:
    """End the session `user` rides in Postgres, then tell every process."""
    if not user.token_id:
        return
    if await sessions.end_token(svc.db, user.token_id, svc.clock()):
        log.info("session_ended", user_id=user.id, reason="logout")
        await audittrail.record(svc.db, audittrail.LOGOUT, subject_id=user.id, actor_id=user.id)
    await svc.sessions.announce_ended(user.token_id)
