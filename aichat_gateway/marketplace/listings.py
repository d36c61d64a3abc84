"""Listings: validation of what a seller submits (pure) and their storage (thin asyncpg shell).

A listing is a seller's provider endpoint: base URL, encrypted key, the models it serves and a
price. Every query is scoped to its owner (admins see all): another seller's listing is simply
"not found". Changes are announced on Redis so every gateway process refreshes its snapshot.
"""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg

from aichat_gateway.config.catalog import Catalog
from aichat_gateway.marketplace.errors import DuplicateKey, InvalidListing, ListingNotFound, shown
from aichat_gateway.marketplace.pricing import Price, PriceError, parse_multiplier, parse_price
from aichat_gateway.marketplace.vault import Vault, last4

if TYPE_CHECKING:
    from aichat_gateway.marketplace.changes import ListingChanges

# Provider kinds with an adapter in proxy/adapters (kept in step with its KINDS by a test).
PROVIDERS = ("openai", "anthropic")
LIMIT_FIELDS = ("rpm", "tpm", "concurrency", "daily_tokens", "monthly_tokens")
_ALLOWED_FIELDS = {"name", "provider", "base_url", "api_key", "models", "pricing", "limits", "attest_resale"}
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")


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


def parse_new_listing(body: object, catalog: Catalog) -> NewListing:
    """Validate a create request; raises InvalidListing naming the offending field."""
    if not isinstance(body, dict):
        raise InvalidListing("the request body must be a JSON object")
    unknown = set(body) - _ALLOWED_FIELDS
    if unknown:
        raise InvalidListing(f"unknown field {sorted(unknown)[0]!r}", param=sorted(unknown)[0])
    name = required_string(body, "name", 100)
    provider = required_string(body, "provider", 20)
    if provider not in PROVIDERS:
        raise InvalidListing(f"provider must be one of {', '.join(PROVIDERS)}", param="provider")
    base_url = required_string(body, "base_url", 2048)
    api_key = required_string(body, "api_key", 512)
    if body.get("attest_resale") is not True:
        raise InvalidListing(
            "attest_resale must be true: you confirm you may resell access through this key",
            param="attest_resale",
        )
    models = _models(body.get("models"))
    multiplier, explicit = parse_pricing(body.get("pricing"))
    if explicit is None:
        missing = [m for m, _ in models if catalog.get(m) is None]
        if missing:
            raise InvalidListing(
                f"model {missing[0]!r} is not in the catalog, so it needs explicit prices "
                "(pricing.input_usd_per_million and pricing.output_usd_per_million)",
                param="pricing",
            )
    return NewListing(name, provider, base_url, api_key, models, multiplier, explicit, parse_limits(body.get("limits")))


def required_string(body: dict[str, Any], key: str, max_len: int) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidListing(f"{key} is required and must be a non-empty string", param=key)
    if len(value) > max_len:
        raise InvalidListing(f"{key} is longer than {max_len} characters", param=key)
    # NUL cannot be stored in Postgres text (the insert would fail: 500), and a line break in an
    # API key would end up inside the Authorization header sent upstream.
    if any(ord(c) < 32 or ord(c) == 127 for c in value.strip()):
        raise InvalidListing(f"{key} must not contain control characters", param=key)
    return value.strip()


def _models(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list) or not 1 <= len(value) <= 100:
        raise InvalidListing("models must be a list of 1 to 100 {model, upstream_model?} objects", param="models")
    seen: dict[str, str] = {}
    for item in value:
        if not isinstance(item, dict) or set(item) - {"model", "upstream_model"}:
            raise InvalidListing('each models entry is {"model", "upstream_model"?}', param="models")
        model, upstream = item.get("model"), item.get("upstream_model", item.get("model"))
        if not isinstance(model, str) or not _MODEL_NAME.match(model):
            raise InvalidListing(f"model name {shown(model)} is not valid", param="models")
        if not isinstance(upstream, str) or not _MODEL_NAME.match(upstream):
            raise InvalidListing(f"upstream_model {shown(upstream)} is not valid", param="models")
        if model in seen:
            raise InvalidListing(f"model {model!r} is listed twice", param="models")
        seen[model] = upstream
    return tuple(seen.items())


def parse_pricing(value: object) -> tuple[Decimal | None, Price | None]:
    if not isinstance(value, dict):
        raise InvalidListing(
            'pricing must be {"multiplier"} or {"input_usd_per_million", "output_usd_per_million"}',
            param="pricing",
        )
    try:
        if set(value) == {"multiplier"}:
            return parse_multiplier(value["multiplier"]), None
        if set(value) == {"input_usd_per_million", "output_usd_per_million"}:
            return None, Price(
                parse_price(value["input_usd_per_million"], "pricing.input_usd_per_million"),
                parse_price(value["output_usd_per_million"], "pricing.output_usd_per_million"),
            )
    except PriceError as exc:
        raise InvalidListing(str(exc), param="pricing") from None
    raise InvalidListing(
        'pricing must be {"multiplier"} or {"input_usd_per_million", "output_usd_per_million"}',
        param="pricing",
    )


def parse_limits(value: object) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidListing("limits must be an object", param="limits")
    limits: dict[str, int] = {}
    for key, limit in value.items():
        if key not in LIMIT_FIELDS:
            raise InvalidListing(f"unknown limit {key!r}; allowed: {', '.join(LIMIT_FIELDS)}", param="limits")
        if limit is None:
            continue
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 10**12:
            raise InvalidListing(f"limits.{key} must be a positive integer", param="limits")
        limits[key] = limit
    return limits


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
