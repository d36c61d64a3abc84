"""Gateway API keys: the owner-scoped repository (create, list, revoke).

Every statement filters on the owner, so another user's key id behaves exactly like an unknown
one (NotFound), and nothing here ever selects `key_hash` for output. The format lives in
keyformat.py and the hot-path cache in keycache.py; both are re-exported here because callers
think of them as "the keys module".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from aichat_gateway.accounts.db import Executor
from aichat_gateway.accounts.errors import InvalidInput, NotFound
from aichat_gateway.accounts.keycache import KeyCache, KeyPrincipal, revocation_channel
from aichat_gateway.accounts.keyformat import NewKey, generate_key, hash_secret, looks_like_key
from aichat_gateway.config.logging import get_logger

__all__ = [
    "ApiKey",
    "CreatedKey",
    "KeyCache",
    "KeyPrincipal",
    "NewKey",
    "create_key",
    "generate_key",
    "hash_secret",
    "list_keys",
    "looks_like_key",
    "parse_key_id",
    "revocation_channel",
    "revoke_key",
    "validate_key_name",
]

log = get_logger(__name__)

MAX_NAME_CHARS = 100


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as its owner sees it in lists: no secret, no hash."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    def public(self) -> dict[str, str | None]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
        }


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """The answer to "create a key": the only time the secret is available."""

    key: ApiKey
    secret: str

    def __repr__(self) -> str:
        return f"CreatedKey(key={self.key!r})"

    def public(self) -> dict[str, str | None]:
        return {
            "id": self.key.id,
            "name": self.key.name,
            "key": self.secret,
            "prefix": self.key.prefix,
            "created_at": _iso(self.key.created_at),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _api_key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        id=str(row["id"]),
        name=row["name"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def validate_key_name(value: object, *, param: str = "name") -> str:
    if not isinstance(value, str):
        raise InvalidInput("name must be a string", param=param)
    name = value.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise InvalidInput(f"name must be 1 to {MAX_NAME_CHARS} characters", param=param)
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput("name must not contain control characters", param=param)
    return name


def parse_key_id(value: str) -> uuid.UUID:
    """A key id from a URL; anything that is not a UUID is simply a key that does not exist."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such key", param="id") from None


async def create_key(db: Executor, owner_id: str, name: str) -> CreatedKey:
    name = validate_key_name(name)
    new = generate_key()
    row = await db.fetchrow(
        """INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, $2, $3, $4)
           RETURNING id, name, prefix, created_at, last_used_at, revoked_at""",
        uuid.UUID(owner_id),
        name,
        new.prefix,
        new.key_hash,
    )
    assert row is not None
    key = _api_key(row)
    log.info("api_key_created", user_id=owner_id, key_id=key.id)
    return CreatedKey(key=key, secret=new.secret)


async def list_keys(db: Executor, owner_id: str) -> list[ApiKey]:
    rows = await db.fetch(
        """SELECT id, name, prefix, created_at, last_used_at, revoked_at
           FROM api_keys WHERE user_id = $1 ORDER BY created_at, id""",
        uuid.UUID(owner_id),
    )
    return [_api_key(r) for r in rows]


async def revoke_key(db: Executor, owner_id: str, key_id: str) -> bytes:
    """Revoke the owner's key (idempotent: a second revoke keeps the first time) and return its hash.

    The caller then hands the hash to `KeyCache.announce_revoked` so every process forgets it.
    Another user's key, or no key, is NotFound.
    """
    key_uuid = parse_key_id(key_id)
    key_hash = await db.fetchval(
        """UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
           WHERE id = $1 AND user_id = $2 RETURNING key_hash""",
        key_uuid,
        uuid.UUID(owner_id),
    )
    if key_hash is None:
        raise NotFound("no such key", param="id")
    log.info("api_key_revoked", user_id=owner_id, key_id=str(key_uuid))
    return bytes(key_hash)
