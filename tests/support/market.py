"""A marketplace seeded over HTTP, the way a new user would do it: sellers and buyers register and
log in, sellers list upstreams, buyers get funds (as an admin grants them) and gateway keys."""

from __future__ import annotations

import asyncio
import concurrent.futures
import secrets
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from redis.asyncio import Redis

from aichat_gateway.billing.amounts import parse_usd
from aichat_gateway.billing.credits import grant_credit
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.config.settings import Settings
from tests.support.emails import unique_email
from tests.support.processes import Proc
from tests.support.waiting import wait_until

PASSWORD_SELLER = "seller-pass-" + secrets.token_hex(8)
PASSWORD_BUYER = "buyer-pass-" + secrets.token_hex(8)
EXPLICIT_PRICE = {"input_usd_per_million": "1", "output_usd_per_million": "2"}
PRICE_CHEAP = {"input_usd_per_million": "0.5", "output_usd_per_million": "1"}
PRICE_DEAR = {"input_usd_per_million": "5", "output_usd_per_million": "10"}
BUYER_FUNDS_USD = "1000"


@dataclass
class Account:
    id: str
    email: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Market:
    seller: Account
    buyer: Account
    buyer_key: str  # the buyer's gateway key secret (shown once, at creation)
    buyer_key_id: str
    listings: dict[str, dict[str, Any]]  # name -> the create answer
    provider_keys: dict[str, str]  # name -> the seller's provider key for that listing
    models: list[str]  # every model the listings serve
    created_key_secrets: list[str] = field(default_factory=list)

    def new_key(self, gateway: Proc, name: str = "extra") -> tuple[str, str]:
        """A fresh gateway key for the buyer: (key id, secret)."""
        answer = httpx.post(gateway.url + "/api/keys", json={"name": name}, headers=self.buyer.auth, timeout=10)
        assert answer.status_code == 201, answer.text
        body = answer.json()
        self.created_key_secrets.append(body["key"])
        return body["id"], body["key"]

    def revoke(self, gateway: Proc, key_id: str) -> httpx.Response:
        return httpx.delete(f"{gateway.url}/api/keys/{key_id}", headers=self.buyer.auth, timeout=10)


def register_and_login(gateway: Proc, tag: str, password: str) -> Account:
    email = unique_email(tag)
    registered = httpx.post(gateway.url + "/api/auth/register", json={"email": email, "password": password}, timeout=10)
    assert registered.status_code == 201, registered.text
    login = httpx.post(gateway.url + "/api/auth/login", json={"email": email, "password": password}, timeout=10)
    assert login.status_code == 200, login.text
    return Account(registered.json()["id"], email, password, login.json()["access_token"])


def fund(settings: Settings, user_id: str, amount_usd: str) -> None:
    """Promotional credit, exactly as an admin grants it: Postgres first, then the hot view."""

    async def grant() -> None:
        db = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        redis = Redis.from_url(settings.redis_url)
        try:
            await grant_credit(
                db,
                user_id=user_id,
                amount_micro=parse_usd(amount_usd),
                reason="test funds",
                granted_by=None,
                idempotency_key=None,
                on_balance_change=HotBalances(redis, settings.redis_prefix).credit,
            )
        finally:
            await redis.aclose()
            await db.close()

    # Its own loop on a worker thread: callable from sync fixtures and async tests alike.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(asyncio.run, grant()).result()


def create_listing(gateway: Proc, seller: Account, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(gateway.url + "/api/marketplace/listings", json=body, headers=seller.auth, timeout=10)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def provider_key() -> str:
    return "sk-test-seller-" + secrets.token_hex(16)


def wait_for_models(gateway: Proc, key: str, models: list[str], within: float = 10.0) -> None:
    """Poll /v1/models until every model shows (a gateway may have started before the listing)."""

    def listed() -> bool:
        answer = httpx.get(gateway.base_url + "/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert answer.status_code == 200, answer.text
        return set(models) <= {m["id"] for m in answer.json()["data"]}

    wait_until(listed, within, f"{models} on {gateway.name}", interval=0.05)


def serving(model: str, price: dict[str, str] = EXPLICIT_PRICE) -> tuple[list[dict[str, str]], dict[str, str]]:
    """One model outside the catalog (so it needs explicit prices), sent upstream as gpt-4o-mini."""
    return [{"model": model, "upstream_model": "gpt-4o-mini"}], price
