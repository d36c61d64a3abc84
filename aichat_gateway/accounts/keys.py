"""Gateway API keys: the owner-scoped repository (create, list, change settings, revoke).

Every statement filters on the owner, so another user's key id behaves exactly like an unknown
one (NotFound), and nothing here ever selects `key_hash` for output. A key's settings (routing
defaults, spend caps) are parsed in keysettings.py; a revoked key cannot be changed (404, with a
message saying why, since only its owner can get that far). The format lives in
keyformat.py and the hot-path cache in keycache.py; both are re-exported here because callers
think of them as "the keys module".
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from aichat_gateway.accounts.db import Executor
from aichat_gateway.accounts.errors import InvalidInput, NotFound
from aichat_gateway.accounts.keycache import KeyCache, KeyPrincipal, revocation_channel
from aichat_gateway.accounts.keyformat import NewKey, generate_key, hash_secret, looks_like_key
from aichat_gateway.accounts.keysettings import DAILY_CAP, MONTHLY_CAP, NO_SETTINGS, ROUTING, KeyChanges, KeySettings
from aichat_gateway.config.logging import get_logger

__all__ = [
    "ApiKey",
    "CreatedKey",
    "KeyCache",
    "KeyChanges",
    "KeyPrincipal",
    "KeySettings",
    "NewKey",
    "Revoked",
    "create_key",
    "generate_key",
    "get_key",
    "hash_secret",
    "key_name",
    "list_keys",
    "looks_like_key",
    "parse_key_id",
    "revocation_channel",
    "revoke",
    "revoke_key",
    "update_key",
    "validate_key_name",
]

log = get_logger(__name__)

MAX_NAME_CHARS = 100
# What every statement returns about a key; `routing::text` is decoded here so the answer does not
# depend on the pool's jsonb codec (the app's pool has one, a CLI connection may not).
_COLUMNS = """id, name, prefix, created_at, last_used_at, revoked_at,
              routing::text AS routing, daily_spend_cap_micro, monthly_spend_cap_micro"""
# Keys a user made, as opposed to session keys (sessionkeys.py: the only keys with an expiry).
_MADE_BY_USER = "expires_at IS NULL"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as its owner sees it in lists: no secret, no hash."""

    id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    settings: KeySettings = field(default=NO_SETTINGS)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "created_at": _iso(self.created_at),
            "last_used_at": _iso(self.last_used_at),
            "revoked_at": _iso(self.revoked_at),
            **self.settings.public(),
        }


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """The answer to "create a key": the only time the secret is available."""

    key: ApiKey
    secret: str

    def __repr__(self) -> str:
        return f"CreatedKey(key={self.key!r})"

    def public(self) -> dict[str, Any]:
        return {
            "id": self.key.id,
            "name": self.key.name,
            "key": self.secret,
            "prefix": self.key.prefix,
            "created_at": _iso(self.key.created_at),
            **self.key.settings.public(),
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
        settings=KeySettings(
            routing=orjson.loads(row["routing"]) if row["routing"] is not None else None,
            daily_cap_micro=row["daily_spend_cap_micro"],
            monthly_cap_micro=row["monthly_spend_cap_micro"],
        ),
    )


def _json_text(value: dict[str, Any] | None) -> str | None:
    """A routing object as a `$n::text::jsonb` parameter: independent of the pool's jsonb codec."""
    return orjson.dumps(value).decode() if value is not None else None


def key_name(value: str) -> str:
    """The rule for a key's name: stripped, 1 to MAX_NAME_CHARS characters, no control characters;
    ValueError (naming the field) otherwise."""
    name = value.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise ValueError(f"name must be 1 to {MAX_NAME_CHARS} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError("name must not contain control characters")
    return name


def validate_key_name(value: object, *, param: str = "name") -> str:
    """`key_name` for callers outside the REST API (which reads names with accounts/schemas.py)."""
    if not isinstance(value, str):
        raise InvalidInput("name must be a string", param=param)
    try:
        return key_name(value)
    except ValueError as exc:
        raise InvalidInput(str(exc), param=param) from None


def parse_key_id(value: str) -> uuid.UUID:
    """A key id from a URL; anything that is not a UUID is simply a key that does not exist."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound("no such key", param="id") from None


async def create_key(db: Executor, owner_id: str, name: str, settings: KeySettings = NO_SETTINGS) -> CreatedKey:
    """Create a key with already validated `settings` (keysettings.parse_settings)."""
    name = validate_key_name(name)
    new = generate_key()
    row = await db.fetchrow(
        f"""INSERT INTO api_keys (user_id, name, prefix, key_hash, routing, daily_spend_cap_micro,
                                  monthly_spend_cap_micro)
            VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7)
            RETURNING {_COLUMNS}""",  # noqa: S608  # _COLUMNS is a constant of this module
        uuid.UUID(owner_id),
        name,
        new.prefix,
        new.key_hash,
        _json_text(settings.routing),
        settings.daily_cap_micro,
        settings.monthly_cap_micro,
    )
    assert row is not None
    key = _api_key(row)
    log.info("api_key_created", user_id=owner_id, key_id=key.id)
    return CreatedKey(key=key, secret=new.secret)


async def list_keys(db: Executor, owner_id: str) -> list[ApiKey]:
    """The keys the owner made (session keys, which come and go with logins, are not among them)."""
    rows = await db.fetch(
        f"SELECT {_COLUMNS} FROM api_keys WHERE user_id = $1 AND {_MADE_BY_USER} ORDER BY created_at, id",  # noqa: S608  # constants
        uuid.UUID(owner_id),
    )
    return [_api_key(r) for r in rows]


async def get_key(db: Executor, owner_id: str, key_id: str) -> ApiKey:
    """One of the owner's keys (revoked ones too); NotFound for anyone else's, or a session key."""
    row = await db.fetchrow(
        f"SELECT {_COLUMNS} FROM api_keys WHERE id = $1 AND user_id = $2 AND {_MADE_BY_USER}",  # noqa: S608  # constants
        parse_key_id(key_id),
        uuid.UUID(owner_id),
    )
    if row is None:
        raise NotFound("no such key", param="id")
    return _api_key(row)


async def update_key(db: Executor, owner_id: str, key_id: str, changes: KeyChanges) -> tuple[ApiKey, bytes]:
    """Apply a validated PATCH to the owner's live key; return the key as it now is, and its hash.

    Only the fields in `changes.given` are written (null clears a setting). The caller then hands
    the hash to `KeyCache.announce_changed` so every process reloads the key. Another user's key,
    no key, and a revoked key are NotFound.
    """
    key_uuid = parse_key_id(key_id)
    new = changes.settings
    row = await db.fetchrow(
        f"""UPDATE api_keys SET
                name = CASE WHEN $3::boolean THEN $4::text ELSE name END,
                routing = CASE WHEN $5::boolean THEN $6::text::jsonb ELSE routing END,
                daily_spend_cap_micro = CASE WHEN $7::boolean THEN $8::bigint ELSE daily_spend_cap_micro END,
                monthly_spend_cap_micro = CASE WHEN $9::boolean THEN $10::bigint ELSE monthly_spend_cap_micro END
            WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL AND {_MADE_BY_USER}
            RETURNING {_COLUMNS}, key_hash""",  # noqa: S608  # constants of this module
        key_uuid,
        uuid.UUID(owner_id),
        changes.sets("name"),
        changes.name,
        changes.sets(ROUTING),
        _json_text(new.routing),
        changes.sets(DAILY_CAP),
        new.daily_cap_micro,
        changes.sets(MONTHLY_CAP),
        new.monthly_cap_micro,
    )
    if row is None:
        revoked = await db.fetchval(
            f"SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $1 AND user_id = $2 AND {_MADE_BY_USER}",  # noqa: S608  # constant
            key_uuid,
            uuid.UUID(owner_id),
        )
        if revoked:
            raise NotFound("this key is revoked; a revoked key cannot be changed", param="id")
        raise NotFound("no such key", param="id")
    log.info("api_key_changed", user_id=owner_id, key_id=str(key_uuid), fields=sorted(changes.given))
    return _api_key(row), bytes(row["key_hash"])


@dataclass(frozen=True, slots=True)
class Revoked:
    key_hash: bytes
    newly: bool  # False: it was revoked before (the first time is kept)


async def revoke_key(db: Executor, owner_id: str, key_id: str) -> bytes:
    """Revoke the owner's key (idempotent: a second revoke keeps the first time) and return its hash.

    The caller then hands the hash to `KeyCache.announce_revoked` so every process forgets it.
    Another user's key, a session key, or no key is NotFound.
    """
    return (await revoke(db, owner_id, key_id)).key_hash


async def revoke(db: Executor, owner_id: str, key_id: str) -> Revoked:
    """`revoke_key`, also saying whether this call revoked it (the audit trail records only that one)."""
    key_uuid = parse_key_id(key_id)
    row = await db.fetchrow(
        f"""WITH before AS (SELECT revoked_at FROM api_keys WHERE id = $1)
            UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
            WHERE id = $1 AND user_id = $2 AND {_MADE_BY_USER}
            RETURNING key_hash, (SELECT revoked_at IS NULL FROM before) AS newly""",  # noqa: S608  # constant
        key_uuid,
        uuid.UUID(owner_id),
    )
    if row is None:
        raise NotFound("no such key", param="id")
    log.info("api_key_revoked", user_id=owner_id, key_id=str(key_uuid))
    return Revoked(bytes(row["key_hash"]), bool(row["newly"]))
