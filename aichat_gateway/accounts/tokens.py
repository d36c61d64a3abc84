"""Session tokens: short-lived HS256 JWTs, and the CSRF token bound to each session.

Keys are never the master secret itself: each is derived with HKDF for one purpose ("session-jwt",
"session-csrf"), so a key leaked from one use cannot forge anything else, and the vault's keys are
unrelated to these. Tokens are signed with the key of the first `GATEWAY_SECRET_KEY` entry and
verified against the keys of every entry, so rotating the master key does not log everyone out.

Expiry is checked here against an injected clock (not by PyJWT), so tests never sleep.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from aichat_gateway.accounts.errors import InvalidCredentials
from aichat_gateway.config.settings import Settings

JWT_PURPOSE = "session-jwt"
CSRF_PURPOSE = "session-csrf"
ROLES = ("user", "admin")
# Pinned: never read the algorithm from the token (that is how `alg: none` and RS/HS confusion work).
_ALGORITHMS = ["HS256"]
_ISSUED_AT_LEEWAY = 30  # seconds of clock skew tolerated between gateway hosts
_MAX_TOKEN_CHARS = 4096  # nothing we issue is near this; refuse before parsing


def derive_key(master: str, purpose: str) -> bytes:
    """A 256-bit key for one purpose, derived from a master secret with HKDF-SHA256."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"aichat-gateway/{purpose}".encode())
    return hkdf.derive(master.encode())


@dataclass(frozen=True, slots=True)
class SessionClaims:
    user_id: str
    role: str
    issued_at: int
    expires_at: int
    token_id: str


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: SessionClaims
    csrf_token: str

    @property
    def expires_in(self) -> int:
        return self.claims.expires_at - self.claims.issued_at


def check_times(issued_at: int, expires_at: int, now: float) -> None:
    """Pure decision: is a token with these times valid at `now`? Raises InvalidCredentials if not."""
    if expires_at <= now:
        raise InvalidCredentials("session expired; log in again")
    if issued_at > now + _ISSUED_AT_LEEWAY:
        raise InvalidCredentials("invalid session token")
    if expires_at <= issued_at:
        raise InvalidCredentials("invalid session token")


def _claims_from_payload(payload: dict[str, Any]) -> SessionClaims:
    sub, role, iat, exp, jti = (payload.get(k) for k in ("sub", "role", "iat", "exp", "jti"))
    if not isinstance(sub, str) or not sub:
        raise InvalidCredentials("invalid session token")
    if role not in ROLES or not isinstance(role, str):
        raise InvalidCredentials("invalid session token")
    # bool is an int subclass; a JSON `true` is not a time.
    if type(iat) is not int or type(exp) is not int:
        raise InvalidCredentials("invalid session token")
    if not isinstance(jti, str) or not jti:
        raise InvalidCredentials("invalid session token")
    return SessionClaims(user_id=sub, role=role, issued_at=iat, expires_at=exp, token_id=jti)


class SessionTokens:
    """Issues and checks session JWTs and their CSRF tokens. Cheap to build (HKDF only)."""

    def __init__(
        self,
        secret_keys: Sequence[str],
        ttl_seconds: int,
        *,
        clock: Callable[[], float] = time.time,
        purpose: str = JWT_PURPOSE,
    ) -> None:
        if not secret_keys:
            raise ValueError("at least one secret key is needed")
        self._jwt_keys = [derive_key(k, purpose) for k in secret_keys]
        self._csrf_keys = [derive_key(k, CSRF_PURPOSE) for k in secret_keys]
        self._ttl = ttl_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Callable[[], float] = time.time) -> SessionTokens:
        return cls(settings.secret_keys, settings.jwt_ttl_seconds, clock=clock)

    def issue(self, user_id: str, role: str) -> IssuedToken:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        now = int(self._clock())
        claims = SessionClaims(
            user_id=user_id,
            role=role,
            issued_at=now,
            expires_at=now + self._ttl,
            token_id=secrets.token_urlsafe(16),
        )
        payload = {
            "sub": claims.user_id,
            "role": claims.role,
            "iat": claims.issued_at,
            "exp": claims.expires_at,
            "jti": claims.token_id,
        }
        token = jwt.encode(payload, self._jwt_keys[0], algorithm="HS256")
        return IssuedToken(token=token, claims=claims, csrf_token=self._csrf_for(self._csrf_keys[0], claims))

    def decode(self, token: str) -> SessionClaims:
        """Verify signature, algorithm, required claims and times; InvalidCredentials otherwise."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise InvalidCredentials("invalid session token")
        payload = self._verified_payload(token)
        claims = _claims_from_payload(payload)
        check_times(claims.issued_at, claims.expires_at, self._clock())
        return claims

    def _verified_payload(self, token: str) -> dict[str, Any]:
        options: jwt.types.Options = {
            "require": ["exp", "iat", "sub", "jti"],
            # Times are checked by check_times() against the injected clock.
            "verify_exp": False,
            "verify_iat": False,
            "verify_nbf": False,
        }
        for key in self._jwt_keys:
            try:
                payload: dict[str, Any] = jwt.decode(token, key, algorithms=_ALGORITHMS, options=options)
            except jwt.InvalidSignatureError:
                continue  # maybe signed with an older (rotated) key: try the next one
            except jwt.PyJWTError:
                raise InvalidCredentials("invalid session token") from None
            return payload
        raise InvalidCredentials("invalid session token")

    def csrf_matches(self, claims: SessionClaims, presented: str) -> bool:
        """Constant-time check of a presented CSRF token against the session it must belong to."""
        candidate = presented.encode()
        return any(hmac.compare_digest(candidate, self._csrf_for(key, claims).encode()) for key in self._csrf_keys)

    @staticmethod
    def _csrf_for(key: bytes, claims: SessionClaims) -> str:
        # Bound to the session id: a cookie planted by a sibling subdomain cannot match a session
        # it does not know, which plain double-submit would allow.
        return hmac.new(key, claims.token_id.encode(), hashlib.sha256).hexdigest()
