"""`aichat-gateway demo` against a real database: idempotent, and it follows a changed secret."""

from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from aichat_gateway.config.settings import Settings, load_settings
from aichat_gateway.marketplace.vault import Vault
from aichat_gateway.server.demo import run_demo
from tests.support.scratch import TEST_REDIS_URL, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with migrated_database("demo") as dsn:
        yield dsn


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("demo") as p:
        yield p


def settings_with(database_url: str, prefix: str, secret: str) -> Settings:
    return load_settings(
        DATABASE_URL=database_url,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=secret,
        GATEWAY_REDIS_PREFIX=prefix,
        GATEWAY_ALLOW_PRIVATE_UPSTREAMS=True,
    )


async def demo_listings(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch("SELECT base_url, key_ciphertext, status FROM listings WHERE deleted_at IS NULL")
    finally:
        await conn.close()


async def test_a_second_run_repoints_the_one_demo_listing_instead_of_adding_another(
    database_url: str, prefix: str
) -> None:
    settings = settings_with(database_url, prefix, "demo-secret-one-0123456789abcdef0123456789")
    await run_demo(settings, "http://127.0.0.1:9001/v1", None)
    await run_demo(settings, "http://127.0.0.1:9002/v1", None)
    rows = await demo_listings(database_url)
    assert [(r["base_url"], r["status"]) for r in rows] == [("http://127.0.0.1:9002/v1", "active")]


async def test_a_run_under_a_new_secret_leaves_a_listing_key_the_new_secret_decrypts(
    database_url: str, prefix: str
) -> None:
    old, new = "demo-secret-old-0123456789abcdef0123456789", "demo-secret-new-0123456789abcdef0123456789"
    await run_demo(settings_with(database_url, prefix, old), "http://127.0.0.1:9001/v1", None)
    await run_demo(settings_with(database_url, prefix, new), "http://127.0.0.1:9001/v1", None)
    (row,) = await demo_listings(database_url)
    assert Vault((new,)).decrypt(row["key_ciphertext"]).startswith("sk-fake-demo-")


async def test_funds_far_above_the_balance_top_the_demo_buyer_up_to_exactly_that_amount(
    database_url: str, prefix: str
) -> None:
    settings = settings_with(database_url, prefix, "demo-secret-one-0123456789abcdef0123456789")
    await run_demo(settings, "http://127.0.0.1:9001/v1", None)  # at least the default $10
    seeded = await run_demo(settings, "http://127.0.0.1:9001/v1", None, funds_micro=1_000_000_000)
    assert seeded["balance_usd"] == "1000.000000"
    again = await run_demo(settings, "http://127.0.0.1:9001/v1", None, funds_micro=1_000_000_000)
    assert again["balance_usd"] == "1000.000000"  # not minted twice
