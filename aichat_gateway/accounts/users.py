"""Users: creation, look-up and password authentication (a repository over asyncpg).

E-mails keep the case the user typed but are unique case-insensitively (the `lower(email)` index).
Every address from outside passes `aichat_gateway.emailaddr`'s one rule (plain ASCII, simple shape)
and every look-up compares `lower(email)` with its canonical form (ASCII letters lower-cased), so
Postgres' and Python's ideas of lower case can never disagree about which account is meant. The
password hash never leaves this module: `User` has no field for it, so it cannot end up in a
response or a log line by accident.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from aichat_gateway.accounts import sessions
from aichat_gateway.accounts.db import Executor, transaction
from aichat_gateway.accounts.errors import AccountDisabled, EmailTaken, InvalidCredentials, InvalidInput, WrongPassword
from aichat_gateway.accounts.passwords import MAX_PASSWORD_CHARS, Passwords, check_password_policy
from aichat_gateway.accounts.tokens import ROLES
from aichat_gateway.config.logging import get_logger
from aichat_gateway.emailaddr import EmailAddress, parse_email

log = get_logger(__name__)

_WRONG_LOGIN = "invalid e-mail or password"
DISABLED_MESSAGE = "this account is disabled by an administrator; contact support"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    email: str
    role: str
    created_at: datetime
    disabled_at: datetime | None = None

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def public(self) -> dict[str, str]:
        """The shape the API shows: `{"id", "email", "role"}`."""
        return {"id": self.id, "email": self.email, "role": self.role}


def email_address(value: object, *, param: str = "email") -> EmailAddress:
    """The address in `value` (emailaddr's rule); InvalidInput naming `param` if it is not one.

    The message is the same for every refusal and never depends on stored data, so it answers
    nothing about accounts.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"{param} must be a string", param=param)
    address = parse_email(value)
    if address is None:
        raise InvalidInput(f"{param} is not a valid e-mail address (plain ASCII letters only)", param=param)
    return address


def canonical_email(value: object, *, param: str = "email") -> str:
    """The canonical form every comparison and the login limiter use; InvalidInput if not an address."""
    return email_address(value, param=param).canonical


def normalise_email(value: object, *, param: str = "email") -> str:
    """The address as stored and shown (stripped, case kept); InvalidInput if not an address."""
    return email_address(value, param=param).shown


def _user(row: asyncpg.Record) -> User:
    return User(
        id=str(row["id"]),
        email=row["email"],
        role=row["role"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
    )


async def create_user(db: Executor, passwords: Passwords, email: str, password: str, *, role: str = "user") -> User:
    """Create a user; EmailTaken if the e-mail (in any case) already has an account."""
    email = normalise_email(email)
    check_password_policy(password)
    if role not in ROLES:
        raise InvalidInput("unknown role", param="role")
    password_hash = await passwords.hash(password)
    try:
        row = await db.fetchrow(
            """INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3)
               RETURNING id, email, role, created_at, disabled_at""",
            email,
            password_hash,
            role,
        )
    except asyncpg.UniqueViolationError:
        raise EmailTaken("an account with this e-mail already exists", param="email") from None
    assert row is not None
    user = _user(row)
    log.info("user_created", user_id=user.id, role=user.role)
    return user


async def get_by_email(db: Executor, email: str) -> User | None:
    """The user with this address in any ASCII case; InvalidInput if `email` is not an address."""
    row = await db.fetchrow(
        "SELECT id, email, role, created_at, disabled_at FROM users WHERE lower(email) = $1", canonical_email(email)
    )
    return _user(row) if row is not None else None


async def get_by_id(db: Executor, user_id: str) -> User | None:
    """The user, or None, also when `user_id` is not a UUID (so callers never see a 500 for it)."""
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        return None
    row = await db.fetchrow("SELECT id, email, role, created_at, disabled_at FROM users WHERE id = $1", uid)
    return _user(row) if row is not None else None


async def authenticate(db: Executor, passwords: Passwords, email: str, password: str) -> User:
    """The user whose e-mail and password these are; InvalidCredentials otherwise.

    Unknown e-mails still cost one argon2 operation, so response time does not reveal which
    e-mails have accounts. Hashes made with older parameters are upgraded on success. A string
    that is not an address is InvalidInput, decided on the text alone.
    """
    canonical = canonical_email(email)
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidCredentials(_WRONG_LOGIN)  # decided without touching the user: no oracle
    row = await db.fetchrow(
        "SELECT id, email, role, created_at, disabled_at, password_hash FROM users WHERE lower(email) = $1", canonical
    )
    if row is None:
        await passwords.burn_dummy(password)
        raise InvalidCredentials(_WRONG_LOGIN)
    if not await passwords.verify(row["password_hash"], password):
        raise InvalidCredentials(_WRONG_LOGIN)
    user = _user(row)
    if user.disabled:
        # Said only to whoever knows the password: it tells nothing to someone guessing.
        raise AccountDisabled(DISABLED_MESSAGE)
    if passwords.needs_rehash(row["password_hash"]):
        await db.execute("UPDATE users SET password_hash = $2 WHERE id = $1", row["id"], await passwords.hash(password))
        log.info("password_rehashed", user_id=user.id)
    return user


async def change_password(
    db: Executor,
    passwords: Passwords,
    user_id: str,
    current_password: str,
    new_password: str,
    *,
    keep_token_id: str | None,
    now: float,
) -> int:
    """Set a new password (the registration policy) if `current_password` is right, and end every
    session of the user but `keep_token_id`'s (the one asking); how many other sessions ended.

    WrongPassword if the current one is wrong, also when another change won a race for the same
    account; InvalidCredentials if the account is gone. The new hash is written only if the stored
    one is still the hash just verified, in the same transaction that ends the sessions.
    """
    check_password_policy(new_password, param="new_password")
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        raise InvalidCredentials("this account no longer exists") from None
    old_hash = await db.fetchval("SELECT password_hash FROM users WHERE id = $1", uid)
    if old_hash is None:
        raise InvalidCredentials("this account no longer exists")
    wrong = WrongPassword("current_password is not this account's password", param="current_password")
    if len(current_password) > MAX_PASSWORD_CHARS or not await passwords.verify(old_hash, current_password):
        raise wrong
    new_hash = await passwords.hash(new_password)
    async with transaction(db) as conn:
        changed = await conn.fetchval(
            "UPDATE users SET password_hash = $2 WHERE id = $1 AND password_hash = $3 RETURNING id",
            uid,
            new_hash,
            old_hash,
        )
        if changed is None:
            raise wrong
        ended = await sessions.end_all(conn, user_id, now, keep_token_id=keep_token_id)
    log.info("password_changed", user_id=user_id, sessions_ended=ended)
    return ended


async def create_admin(
    db: Executor, email: str, password: str, *, passwords: Passwords | None = None, now: float | None = None
) -> User:
    """Create an admin, or make an existing user (matched case-insensitively) admin with this password.

    Idempotent, for `aichat-gateway create-admin`: running it twice leaves one admin account whose
    password is the last one given. Every session of the account ends in the same transaction (a
    password reset must lock out whoever held one); the caller tells the running gateways
    (`sessioncache.announce_user_sessions_ended`).
    """
    email = normalise_email(email)
    check_password_policy(password)
    password_hash = await (passwords or Passwords()).hash(password)
    async with transaction(db) as conn:
        row = await conn.fetchrow(
            """INSERT INTO users (email, password_hash, role) VALUES ($1, $2, 'admin')
                ON CONFLICT ((lower(email)))
                DO UPDATE SET role = 'admin', password_hash = EXCLUDED.password_hash
                RETURNING id, email, role, created_at, disabled_at""",
            email,
            password_hash,
        )
        assert row is not None
        user = _user(row)
        ended = await sessions.end_all(conn, user.id, time.time() if now is None else now)
    log.info("admin_ensured", user_id=user.id, sessions_ended=ended)
    return user
