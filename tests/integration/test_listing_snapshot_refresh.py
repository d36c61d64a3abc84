"""The listing snapshot when refreshes overlap: the one started last wins, whatever finishes last."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest
from redis.asyncio import Redis

from aichat_gateway.config.catalog import load_catalog
from aichat_gateway.config.settings import Settings
from aichat_gateway.marketplace.snapshot import ListingSnapshot
from aichat_gateway.marketplace.vault import Vault
from aichat_gateway.server.services import create_db_pool
from tests.support.scratch import TEST_REDIS_URL, TEST_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class HeldSnapshot(ListingSnapshot):
    """Reads Postgres for real; the first refresh then waits (holding what it read) until released."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.read = asyncio.Event()
        self.release = asyncio.Event()
        self._held = True  # the test arms it

    async def _load(self) -> list[asyncpg.Record]:
        rows = await super()._load()
        if not self._held:
            self._held = True
            self.read.set()
            await self.release.wait()
        return rows


async def test_a_refresh_that_read_before_a_delete_and_finishes_last_does_not_bring_the_listing_back(
    settings: Settings, db: asyncpg.Connection
) -> None:
    vault = Vault((TEST_SECRET,))
    seller = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", f"{uuid.uuid4().hex}@example.com"
    )
    model = f"snap-{uuid.uuid4().hex[:8]}"
    listing = await db.fetchval(
        """INSERT INTO listings (public_id, seller_id, name, provider, base_url, key_ciphertext, key_last4,
               key_fingerprint, input_micro_per_million, output_micro_per_million, attested_at)
           VALUES ($1, $2, 'snap', 'openai', 'http://127.0.0.1:9/v1', $3, '…abcd', $4, 1, 1, now()) RETURNING id""",
        "lst_" + uuid.uuid4().hex[:16],
        seller,
        vault.encrypt("sk-snapshot-test-key"),
        vault.fingerprint("sk-snapshot-test-key-" + uuid.uuid4().hex),
    )
    await db.execute(
        "INSERT INTO listing_models (listing_id, model, upstream_model) VALUES ($1, $2, $2)", listing, model
    )
    pool = await create_db_pool(settings)
    redis = Redis.from_url(TEST_REDIS_URL)
    try:
        snapshot = HeldSnapshot(pool, redis, vault, load_catalog(), "snaptest")
        await ListingSnapshot.refresh(snapshot)  # not held: the listing is routable
        assert snapshot.index.routes_for(model)
        snapshot._held = False
        first = asyncio.create_task(snapshot.refresh())  # reads the listing, then is held
        await snapshot.read.wait()
        await db.execute("UPDATE listings SET deleted_at = now() WHERE id = $1", listing)
        await snapshot.refresh()  # started later: sees the delete
        assert not snapshot.index.routes_for(model)
        snapshot.release.set()
        await first  # finishes last, with what it read before the delete
        assert not snapshot.index.routes_for(model), "an older refresh brought back a deleted listing"
    finally:
        await redis.aclose()
        await pool.close()
