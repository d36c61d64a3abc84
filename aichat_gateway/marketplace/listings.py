"""Listings: the rules for what a seller submits (pure) and their storage (thin asyncpg shell).

A listing is a seller's provider endpoint: base URL, encrypted key, the models it serves and a
price. The shapes of the create and PATCH bodies are schemas.py's models, which apply the rules
here (`clean_text`, `MODEL_NAME`, `Provider`) and pricing.py's; `new_listing` adds the one that
needs the catalog. Every query is scoped to its owner (admins see all): another seller's listing
is simply "not found". Changes are announced on Redis so every gateway process refreshes its
snapshot.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, get_args

import asyncpg

from aichat_gateway.config.catalog import Catalog
from aichat_gateway.marketplace.errors import DuplicateKey, InvalidListing, ListingNotFound
from aichat_gateway.marketplace.pricing import Price
from aichat_gateway.marketplace.vault import Vault, last4

if TYPE_CHECKING:
    from aichat_gateway.marketplace.changes import ListingChanges
    from aichat_gateway.marketplace.schemas import ListingCreate

# Provider kinds with an adapter in proxy/adapters (kept in step with its KINDS by a test).
Provider = Literal["openai", "anthropic"]
PROVIDERS: tuple[str, ...] = get_args(Provider)
LIMIT_FIELDS = ("rpm", "tpm", "concurrency", "daily_tokens", "monthly_tokens")
MAX_LIMIT = 10**12
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$"
MAX_MODELS = 100
MAX_NAME_CHARS, MAX_URL_CHARS, MAX_KEY_CHARS, MAX_REASON_CHARS = 100, 2048, 512, 500


@dataclass(frozen=True)
class NewListing:
    name: str
    provider: str
    base_url: str
    api_key: str
    models: tuple[tuple[str, str], ...]  # (model, upstream_model)
    multiplier: Decimal | None
    explicit_price: Price | None
    limits: dict[str, int] = field(default_factory=dict)


def clean_text(value: str, key: str, max_len: int) -> str:
    """A listing's name, base URL or API key: stripped, not empty, at most `max_len` characters as
    given, no control characters; ValueError naming `key` otherwise."""
    if not value.strip():
        raise ValueError(f"{key} must not be empty")
    if len(value) > max_len:
        raise ValueError(f"{key} is longer than {max_len} characters")
    # NUL cannot be stored in Postgres text (the insert would fail: 500), and a line break in an
    # API key would end up inside the Authorization header sent upstream.
    if any(ord(c) < 32 or ord(c) == 127 for c in value.strip()):
        raise ValueError(f"{key} must not contain control characters")
    return value.strip()


def reason_text(value: str) -> str:
    """An admin's status reason: at most MAX_REASON_CHARS, without NUL (Postgres text cannot hold it)."""
    if len(value) > MAX_REASON_CHARS or "\x00" in value:
        raise ValueError(f"status_reason must be a string of at most {MAX_REASON_CHARS} characters, without NUL")
    return value


def first_unlisted(models: Iterable[str], catalog: Catalog) -> str | None:
    """The first model without a catalog price: a listing serving it needs explicit prices."""
    return next((model for model in models if catalog.get(model) is None), None)


def new_listing(body: ListingCreate, catalog: Catalog) -> NewListing:
    """A create body read with schemas.ListingCreate, checked against the catalog."""
    multiplier, explicit = body.pricing.parsed()
    models = tuple((entry.model, entry.upstream) for entry in body.models)
    missing = first_unlisted((model for model, _ in models), catalog)
    if explicit is None and missing is not None:
        raise InvalidListing(
            f"model {missing!r} is not in the catalog, so it needs explicit prices "
            "(pricing.input_usd_per_million and pricing.output_usd_per_million)",
            param="pricing",
        )
    limits = body.limits.as_dict() if body.limits is not None else {}
    return NewListing(body.name, body.provider, body.base_url, body.api_key, models, multiplier, explicit, limits)


_COLUMNS = """l.id, l.public_id, l.seller_id, l.name, l.provider, l.base_url, l.key_last4, l.price_multiplier,
    l.input_micro_per_million, l.output_micro_per_million, l.limits, l.status, l.status_reason,
    l.attested_at, l.created_at, l.updated_at,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('model', m.model, 'upstream_model', m.upstream_model)
                               ORDER BY m.model), '[]'::jsonb)
     FROM listing_models m WHERE m.listing_id = l.id) AS models"""


async def insert_listing(db: asyncpg.Pool, vault: Vault, seller_id: str, new: NewListing) -> asyncpg.Record:
    public_id = "lst_" + secrets.token_hex(8)
    async with db.acquire() as conn, conn.transaction():
        try:
            listing_id = await conn.fetchval(
                """INSERT INTO listings (public_id, seller_id, name, provider, base_url, key_ciphertext,
                       key_last4, key_fingerprint, price_multiplier, input_micro_per_million,
                       output_micro_per_million, limits, attested_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::jsonb, now())
                   RETURNING id""",
                public_id,
                uuid.UUID(seller_id),
                new.name,
                new.provider,
                new.base_url,
                vault.encrypt(new.api_key),
                last4(new.api_key),
                vault.fingerprint(new.api_key),
                new.multiplier,
                new.explicit_price.input_micro_per_million if new.explicit_price else None,
                new.explicit_price.output_micro_per_million if new.explicit_price else None,
                new.limits,  # the pool's jsonb codec encodes it
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateKey("this API key is already listed", param="api_key") from None
        await conn.executemany(
            "INSERT INTO listing_models (listing_id, model, upstream_model) VALUES ($1, $2, $3)",
            [(listing_id, model, upstream) for model, upstream in new.models],
        )
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM listings l WHERE l.id = $1", listing_id)  # noqa: S608
    assert row is not None
    return row


async def list_listings(db: asyncpg.Pool, owner_id: str | None) -> list[asyncpg.Record]:
    """A seller's live listings; `owner_id=None` (admins) lists everyone's."""
    return list(
        await db.fetch(
            f"""SELECT {_COLUMNS} FROM listings l
            WHERE l.deleted_at IS NULL AND ($1::uuid IS NULL OR l.seller_id = $1::uuid)
            ORDER BY l.created_at""",  # noqa: S608 - a constant column list; values are parameters
            uuid.UUID(owner_id) if owner_id else None,
        )
    )


async def get_listing(db: asyncpg.Pool, listing_id: str, owner_id: str | None) -> asyncpg.Record:
    row = await db.fetchrow(
        f"""SELECT {_COLUMNS} FROM listings l
            WHERE l.id = $1 AND l.deleted_at IS NULL AND ($2::uuid IS NULL OR l.seller_id = $2::uuid)""",  # noqa: S608
        _uuid_or_not_found(listing_id),
        uuid.UUID(owner_id) if owner_id else None,
    )
    if row is None:
        raise ListingNotFound("no such listing")
    return row


async def update_listing(
    db: asyncpg.Pool,
    vault: Vault,
    listing_id: str,
    owner_id: str | None,
    changes: ListingChanges,
) -> asyncpg.Record:
    """Apply already-validated changes (owner-scoped); a status change without a reason clears it.
    A new key is written together with the URL it was checked with (`changes.endpoint`)."""
    key = changes.endpoint.api_key if changes.endpoint else None
    multiplier, explicit = changes.pricing if changes.pricing is not None else (None, None)
    async with db.acquire() as conn, conn.transaction():
        try:
            updated = await conn.fetchval(
                """UPDATE listings SET
                       name = coalesce($3, name),
                       base_url = coalesce($4, base_url),
                       key_ciphertext = coalesce($5, key_ciphertext),
                       key_last4 = coalesce($6, key_last4),
                       key_fingerprint = coalesce($7, key_fingerprint),
                       price_multiplier = CASE WHEN $8 THEN $9 ELSE price_multiplier END,
                       input_micro_per_million = CASE WHEN $8 THEN $10 ELSE input_micro_per_million END,
                       output_micro_per_million = CASE WHEN $8 THEN $11 ELSE output_micro_per_million END,
                       limits = coalesce($12::jsonb, limits),
                       status = coalesce($13, status),
                       status_reason = CASE WHEN $13::text IS NOT NULL OR $14::text IS NOT NULL
                                            THEN $14 ELSE status_reason END,
                       updated_at = now()
                   WHERE id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR seller_id = $2::uuid)
                   RETURNING id""",
                _uuid_or_not_found(listing_id),
                uuid.UUID(owner_id) if owner_id else None,
                changes.name,
                changes.endpoint.base_url if changes.endpoint else None,
                vault.encrypt(key) if key else None,
                last4(key) if key else None,
                vault.fingerprint(key) if key else None,
                changes.pricing is not None,
                multiplier,
                explicit.input_micro_per_million if explicit else None,
                explicit.output_micro_per_million if explicit else None,
                changes.limits,
                changes.status,
                changes.status_reason,
            )
        except asyncpg.UniqueViolationError:
            raise DuplicateKey("this API key is already listed", param="api_key") from None
        if updated is None:
            raise ListingNotFound("no such listing")
        row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM listings l WHERE l.id = $1", updated)  # noqa: S608
    assert row is not None
    return row


async def delete_listing(db: asyncpg.Pool, listing_id: str, owner_id: str | None) -> None:
    """Soft delete: in-flight requests keep their already-resolved route and finish."""
    done = await db.fetchval(
        """UPDATE listings SET deleted_at = now(), updated_at = now()
           WHERE id = $1 AND deleted_at IS NULL AND ($2::uuid IS NULL OR seller_id = $2::uuid)
           RETURNING id""",
        _uuid_or_not_found(listing_id),
        uuid.UUID(owner_id) if owner_id else None,
    )
    if done is None:
        raise ListingNotFound("no such listing")


def _uuid_or_not_found(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ListingNotFound("no such listing") from None


async def rotate_keys(db: asyncpg.Pool, vault: Vault) -> int:
    """Re-encrypt every provider key not sealed with the current master key; returns how many.

    Run after putting a new key first in GATEWAY_SECRET_KEY (old keys still listed after it);
    once it reports 0, the old master keys can be removed. Fingerprints are recomputed too, since
    they are keyed by the current master key.
    """
    rotated = 0
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT id, key_ciphertext FROM listings")
        for row in rows:
            if not vault.needs_rotation(row["key_ciphertext"]):
                continue
            plaintext = vault.decrypt(row["key_ciphertext"])
            await conn.execute(
                "UPDATE listings SET key_ciphertext = $2, key_fingerprint = $3 WHERE id = $1 AND key_ciphertext = $4",
                row["id"],
                vault.encrypt(plaintext),
                vault.fingerprint(plaintext),
                row["key_ciphertext"],
            )
            rotated += 1
    return rotated
