"""Session keys: the gateway key a signed-in browser uses for its own `/v1` calls (DESIGN.md, "The
browser's model calls").

One key per session, named "dashboard", expiring with the session and dead once the session ends
(logout, a password change, an admin): the key cache reads the session's row on a miss and hears
session ends on the sessions channel (keycache.py). Users' key lists and the key API leave session
keys out: they come and go with logins.

The secret is derived, not random: an HMAC of the session's token id under a key derived from
`GATEWAY_SECRET_KEY` for this purpose only. Asking again in the same session gives the same key,
while only its SHA-256 is stored (as for every key), and the token id alone cannot produce it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aichat_gateway.accounts.db import Executor
from aichat_gateway.accounts.errors import InvalidCredentials
from aichat_gateway.accounts.keyformat import KEY_PREFIX, PREFIX_CHARS, hash_secret
from aichat_gateway.accounts.tokens import derive_key
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.settings import Settings

log = get_logger(__name__)

SESSION_KEY_NAME = "dashboard"
PURPOSE = "session-key"


def derive_secret(key: bytes, token_id: str) -> str:
    """Pure: the session key of the session `token_id`, in the shape of every gateway key."""
    digest = hmac.new(key, token_id.encode(), hashlib.sha256).digest()
    return KEY_PREFIX + base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class SessionKey:
    id: str
    secret: str
    expires_at: datetime
    # Set when the stored key was derived under an older master key: the caller announces it revoked.
    replaced_hash: bytes | None = None

    def __repr__(self) -> str:  # keep the secret out of reprs and tracebacks
        return f"SessionKey(id={self.id!r})"

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": SESSION_KEY_NAME, "key": self.secret, "expires_at": self.expires_at.isoformat()}


async def session_key(db: Executor, settings: Settings, user_id: str, token_id: str) -> SessionKey:
    """The key of the user's live session `token_id`, made on first use; InvalidCredentials if the
    session has ended."""
    session = await db.fetchrow(
        "SELECT id, expires_at FROM sessions WHERE token_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        token_id,
        uuid.UUID(user_id),
    )
    if session is None:
        raise InvalidCredentials("this session has ended; log in again")
    secret = derive_secret(derive_key(settings.secret_keys[0], PURPOSE), token_id)
    key_hash = hash_secret(secret)
    stored = await db.fetchrow("SELECT id, key_hash FROM api_keys WHERE session_id = $1", session["id"])
    if stored is not None and bytes(stored["key_hash"]) == key_hash:
        return SessionKey(str(stored["id"]), secret, session["expires_at"])
    if stored is not None:
        # GATEWAY_SECRET_KEY was rotated since: the stored key can no longer be derived; replace it.
        await db.execute(
            "UPDATE api_keys SET key_hash = $2, prefix = $3 WHERE id = $1",
            stored["id"],
            key_hash,
            secret[:PREFIX_CHARS],
        )
        return SessionKey(str(stored["id"]), secret, session["expires_at"], replaced_hash=bytes(stored["key_hash"]))
    key_id = await db.fetchval(
        """INSERT INTO api_keys (user_id, name, prefix, key_hash, session_id, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (session_id) DO UPDATE SET session_id = EXCLUDED.session_id
           RETURNING id""",
        uuid.UUID(user_id),
        SESSION_KEY_NAME,
        secret[:PREFIX_CHARS],
        key_hash,
        session["id"],
        session["expires_at"],
    )
    log.info("session_key_created", user_id=user_id, key_id=str(key_id))
    return SessionKey(str(key_id), secret, session["expires_at"])
