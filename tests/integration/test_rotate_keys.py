"""`rotate-keys`: provider keys move to the current master key and stay readable throughout."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from aichat_gateway.config.settings import Settings
from aichat_gateway.marketplace.listings import NewListing, insert_listing, rotate_keys
from aichat_gateway.marketplace.vault import Vault
from aichat_gateway.server.services import create_db_pool
from tests.support.scratch import migrated_database

OLD, NEW = "o" * 40, "n" * 40


async def stored_key(db: asyncpg.Pool, vault: Vault, listing_id: str) -> str:
    """The listing's key as the hot path's snapshot reads it (the API has no way to read one back)."""
    return vault.decrypt(await db.fetchval("SELECT key_ciphertext FROM listings WHERE id = $1::uuid", listing_id))


async def seller_id(db: Any) -> str:
    email = f"rot-{secrets.token_hex(5)}@example.com"
    return str(await db.fetchval("INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", email))


@pytest.fixture(scope="module")
def own_database() -> Iterator[str]:
    """Rotation touches every listing in a database, so this test gets a database of its own."""
    with migrated_database("test_rotate") as dsn:
        yield dsn


async def test_rotation_re_encrypts_old_keys_which_stay_readable(settings: Settings, own_database: str) -> None:
    pool: asyncpg.Pool = await create_db_pool(settings.model_copy(update={"database_url": own_database}))
    try:
        secret = "sk-rotate-" + secrets.token_hex(8)
        old_vault = Vault([OLD])
        row = await insert_listing(
            pool,
            old_vault,
            await seller_id(pool),
            NewListing(
                "rot", "openai", "http://127.0.0.1:9/v1", secret, (("gpt-4o", "gpt-4o"),), Decimal("1"), None, {}
            ),
        )
        rotating = Vault([NEW, OLD])
        assert await stored_key(pool, rotating, str(row["id"])) == secret  # old ciphertext still opens
        assert await rotate_keys(pool, rotating) >= 1
        assert await stored_key(pool, Vault([NEW]), str(row["id"])) == secret  # old key can now go
        assert await rotate_keys(pool, rotating) == 0
    finally:
        await pool.close()
