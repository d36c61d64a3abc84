"""`aichat-gateway demo`: an idempotent demo marketplace on the built-in fake upstream.

Creates (or reuses) a seller with one listing pointing at the fake upstream, and a buyer with a
gateway key. The buyer's key is derived from GATEWAY_SECRET_KEY, so every run prints the same
working key and nothing piles up; a later run with another upstream URL repoints the listing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis

from aichat_gateway import apibody
from aichat_gateway.accounts.keys import hash_secret
from aichat_gateway.accounts.passwords import Passwords
from aichat_gateway.accounts.users import create_admin, create_user, get_by_email
from aichat_gateway.billing import ledger
from aichat_gateway.billing.credits import grant_credit
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.config.catalog import load_catalog
from aichat_gateway.config.money import usd
from aichat_gateway.config.settings import Settings
from aichat_gateway.marketplace import listings
from aichat_gateway.marketplace.errors import InvalidListing
from aichat_gateway.marketplace.schemas import ListingCreate
from aichat_gateway.marketplace.urls import validate_upstream_url
from aichat_gateway.marketplace.vault import Vault

SELLER_EMAIL = "seller@demo.example.com"
BUYER_EMAIL = "buyer@demo.example.com"
ADMIN_EMAIL = "admin@demo.example.com"
LISTING_NAME = "Demo: built-in fake upstream"
DEMO_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
DEMO_FUNDS_MICRO = 10_000_000  # $10: the fake upstream's answers cost fractions of a cent


def _derived(settings: Settings, purpose: bytes) -> str:
    digest = hmac.new(settings.secret_keys[0].encode(), purpose, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def demo_key(settings: Settings) -> str:
    return "agw-" + _derived(settings, b"aichat demo buyer key")


def demo_password(settings: Settings, who: str) -> str:
    """Derived like the key, so no password is written in the code and reruns print the same one."""
    return "demo-" + _derived(settings, b"aichat demo password " + who.encode())[:20]


async def _user_id(db: asyncpg.Pool, passwords: Passwords, email: str, password: str) -> str:
    user = await get_by_email(db, email)
    if user is None:
        return (await create_user(db, passwords, email, password)).id
    # An earlier demo (or another secret) may have set another password: the printed one must work.
    await db.execute(
        "UPDATE users SET password_hash = $2 WHERE id = $1", uuid.UUID(user.id), await passwords.hash(password)
    )
    return user.id


async def run_demo(
    settings: Settings, upstream_url: str, gateway_url: str | None, funds_micro: int = DEMO_FUNDS_MICRO
) -> dict[str, Any]:
    from aichat_gateway.server.services import create_db_pool

    base_url = await validate_upstream_url(upstream_url, settings.allow_private_upstreams)
    db = await create_db_pool(settings)
    try:
        passwords = Passwords()
        seller_id = await _user_id(db, passwords, SELLER_EMAIL, demo_password(settings, "seller"))
        buyer_id = await _user_id(db, passwords, BUYER_EMAIL, demo_password(settings, "buyer"))
        admin = await get_by_email(db, ADMIN_EMAIL)
        if admin is None or admin.role != "admin":
            await create_admin(db, ADMIN_EMAIL, demo_password(settings, "admin"), passwords=passwords)
        else:
            await _user_id(db, passwords, ADMIN_EMAIL, demo_password(settings, "admin"))
        listing_id = await db.fetchval(
            "SELECT id FROM listings WHERE seller_id = $1 AND name = $2 AND deleted_at IS NULL",
            seller_id,
            LISTING_NAME,
        )
        vault = Vault(settings.secret_keys)
        fake_key = "sk-fake-demo-" + seller_id.replace("-", "")
        if listing_id is None:
            body = apibody.validate(
                ListingCreate,
                {
                    "name": LISTING_NAME,
                    "provider": "openai",
                    "base_url": base_url,
                    "api_key": fake_key,
                    "models": [{"model": m} for m in DEMO_MODELS],
                    "pricing": {"multiplier": "1"},
                    "attest_resale": True,
                },
                InvalidListing,
            )
            await listings.insert_listing(db, vault, seller_id, listings.new_listing(body, load_catalog()))
        else:
            # The fake key is encrypted again under today's GATEWAY_SECRET_KEY: a demo database
            # seeded with another secret would otherwise leave a listing no gateway can decrypt.
            await db.execute(
                """UPDATE listings SET base_url = $2, status = 'active', key_ciphertext = $3,
                       key_fingerprint = $4, updated_at = now() WHERE id = $1""",
                listing_id,
                base_url,
                vault.encrypt(fake_key),
                vault.fingerprint(fake_key),
            )
        key = demo_key(settings)
        await db.execute(
            """INSERT INTO api_keys (user_id, name, prefix, key_hash) VALUES ($1, 'demo', $2, $3)
               ON CONFLICT (key_hash) DO UPDATE SET revoked_at = NULL""",
            buyer_id,
            key[:12],
            hash_secret(key),
        )
        redis = Redis.from_url(settings.redis_url)
        try:
            balance = await _fund_buyer(db, HotBalances(redis, settings.redis_prefix), buyer_id, funds_micro)
            await redis.publish(f"{settings.redis_prefix}:listings:changed", b"1")
        finally:
            await redis.aclose()
    finally:
        await db.close()
    gateway = gateway_url or settings.public_base_url or f"http://{settings.host}:{settings.port}/v1"
    return {
        "api_key": key,
        "base_url": gateway,
        "model": DEMO_MODELS[0],
        "seller_email": SELLER_EMAIL,
        "seller_password": demo_password(settings, "seller"),
        "buyer_email": BUYER_EMAIL,
        "buyer_password": demo_password(settings, "buyer"),
        "admin_email": ADMIN_EMAIL,
        "admin_password": demo_password(settings, "admin"),
        "balance_usd": usd(balance),
    }


async def _fund_buyer(db: asyncpg.Pool, hot: HotBalances, buyer_id: str, funds_micro: int) -> int:
    """Top the demo buyer up to `funds_micro` with promotional credit, as an admin would, once the
    balance is below a tenth of it: so the demo works on every run without minting money on each."""
    async with db.acquire() as conn:
        balance = await ledger.balance_micro(conn, ledger.AccountKind.BUYER, buyer_id)
    if balance >= funds_micro // 10:
        return balance
    credit = await grant_credit(
        db,
        user_id=buyer_id,
        amount_micro=funds_micro - balance,
        reason="demo buyer funds",
        granted_by=None,
        idempotency_key=None,
        on_balance_change=hot.credit,
    )
    return credit.balance_micro
