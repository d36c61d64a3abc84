"""Password policy and argon2id hashing.

Hashing and verifying cost ~150 ms of CPU each (that is the point of argon2), so the async methods
run them in a worker thread: the event loop keeps serving the hot path while someone logs in.
The policy check is a pure function so the API can refuse a bad password before paying for a hash.
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from aichat_gateway.accounts.errors import InvalidInput

MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 256


def check_password_policy(password: object, *, param: str = "password") -> str:
    """Return the password if it is acceptable, else raise InvalidInput (never echoing the value).

    Only length is enforced (NIST 800-63B): composition rules push people to worse passwords, and
    the upper bound keeps a single request from making us hash megabytes.
    """
    if not isinstance(password, str):
        raise InvalidInput("password must be a string", param=param)
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"password must be at least {MIN_PASSWORD_CHARS} characters", param=param)
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"password must be at most {MAX_PASSWORD_CHARS} characters", param=param)
    return password


class Passwords:
    """argon2id hashing with the library's current recommended parameters.

    One instance per app (it is created with the routes); it also keeps the dummy hash used to make
    a login for an unknown e-mail cost the same as one for a known e-mail.
    """

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        # argon2-cffi's default type is argon2id; said explicitly so nobody "optimises" it away.
        self._hasher = hasher or PasswordHasher()
        self._dummy_hash: str | None = None

    def hash_sync(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            # A corrupt stored hash must not become a 500 that tells the caller the user exists.
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the stored hash uses older parameters; rehash after the next good login."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hash_sync, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await asyncio.to_thread(self.verify_sync, password_hash, password)

    async def burn_dummy(self, password: str) -> None:
        """Spend the same CPU as a real verification, for e-mails that have no account.

        The first call creates the dummy hash (a hash costs about what a verify does), later calls
        verify against it; either way the caller cannot tell "no such user" from "wrong password"
        by timing.
        """
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(24))
            return
        await self.verify(self._dummy_hash, password)
