"""Money on /v1: holds admit only what a buyer can pay, receipts say what each answer cost, and
the ledger ends up with exactly what was charged (buyer pays, seller earns, platform keeps its fee).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import httpx
import orjson
import pytest

from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.config.settings import Settings
from tests.support.calls import read_then_leave
from tests.support.fakes import Fakes
from tests.support.gateways import Gateways
from tests.support.market import Market, fund, register_and_login
from tests.support.processes import Proc
from tests.support.waiting import await_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

MESSAGES = [{"role": "user", "content": "hello"}]
# sleepy-model: one listing at $1 / $2 per 1M tokens (input, output) on a fake answering after 3 s.
IN_MICRO, OUT_MICRO = 1_000_000, 2_000_000


@dataclass
class Buyer:
    id: str
    token: str
    key: str

    @property
    def session(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}", "content-type": "application/json"}


def new_buyer(gateway: Proc, settings: Settings, funds_usd: str | None) -> Buyer:
    account = register_and_login(gateway, "money", "money-test-password")
    if funds_usd is not None:
        fund(settings, account.id, funds_usd)
    created = httpx.post(gateway.url + "/api/keys", json={"name": "money"}, headers=account.auth, timeout=10)
    assert created.status_code == 201, created.text
    return Buyer(account.id, account.token, created.json()["key"])


def hold_for(body: bytes, max_tokens: int) -> int:
    """What the gateway reserves for `body` on sleepy-model (charging.hold_amount): bytes bound the prompt."""
    return -(-(IN_MICRO * len(body) + OUT_MICRO * max_tokens) // 1_000_000)


@pytest.fixture
async def db(proxy_settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(proxy_settings.database_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


async def balance(gateway: Proc, buyer: Buyer) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(gateway.url + "/api/billing/balance", headers=buyer.session)
    assert answer.status_code == 200, answer.text
    shown: dict[str, str] = answer.json()
    return shown


async def test_a_buyer_without_funds_gets_402_insufficient_quota_and_the_provider_is_not_called(
    gateway: Proc, proxy_settings: Settings, market: Market, fakes: Fakes
) -> None:
    buyer = new_buyer(gateway, proxy_settings, None)
    before = fakes.main.stats()["requests"]
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            gateway.base_url + "/chat/completions",
            content=orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}),
            headers=buyer.bearer,
        )
    assert answer.status_code == 402, answer.text
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    assert "Add funds" in error["message"]
    assert fakes.main.stats()["requests"] == before
    assert await balance(gateway, buyer) == {
        "balance_usd": "0.000000",
        "held_usd": "0.000000",
        "available_usd": "0.000000",
    }


async def test_concurrent_requests_over_two_gateways_never_spend_more_than_the_balance(
    gateways: Gateways, proxy_settings: Settings, market: Market, db: asyncpg.Pool
) -> None:
    """Funded for exactly N holds; 10·N requests at once, half on each gateway, each held 3 s by the
    provider: exactly N are admitted, the rest refused, and the buyer never goes below zero."""
    n = 4
    body = orjson.dumps({"model": "sleepy-model", "messages": MESSAGES, "max_tokens": 1000})
    hold = hold_for(body, 1000)
    buyer = new_buyer(gateways.a, proxy_settings, f"{Decimal(n * hold) / 1_000_000:.6f}")

    async def one(client: httpx.AsyncClient, gateway: Proc) -> httpx.Response:
        return await client.post(gateway.base_url + "/chat/completions", content=body, headers=buyer.bearer)

    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
        answers = await asyncio.gather(*(one(client, g) for _ in range(5 * n) for g in (gateways.a, gateways.b)))
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(200) == n, statuses
    assert statuses.count(402) == 9 * n
    charged = sum(int(Decimal(a.headers["x-gateway-cost-usd"]) * 1_000_000) for a in answers if a.status_code == 200)
    assert 0 < charged <= n * hold
    shown = await balance(gateways.a, buyer)
    assert Decimal(shown["balance_usd"]) == Decimal(n * hold - charged) / 1_000_000
    assert shown["held_usd"] == "0.000000"

    async def settled() -> bool:
        async with db.acquire() as conn:
            return await ledger.balance_micro(conn, ledger.AccountKind.BUYER, buyer.id) == n * hold - charged

    await await_until(settled, 15, "the buyer's usage settled into Postgres")
    async with db.acquire() as conn:
        assert await audit(conn) == []


async def test_a_stream_the_buyer_leaves_costs_only_what_was_delivered_and_frees_its_hold(
    gateway: Proc, proxy_settings: Settings, market: Market
) -> None:
    buyer = new_buyer(gateway, proxy_settings, "1")
    got = await read_then_leave(gateway, buyer.key, "paced-model", events=2)
    assert len(got) == 2

    async def hold_freed() -> bool:
        return (await balance(gateway, buyer))["held_usd"] == "0.000000"

    await await_until(hold_freed, 10, "the cut stream's hold to be settled")
    spent = Decimal("1") - Decimal((await balance(gateway, buyer))["balance_usd"])
    # About two tokens delivered at $2 per 1M plus the prompt at $1 per 1M: a few micro-USD, not the
    # hundreds a whole 50-chunk answer (or the hold) would cost.
    assert Decimal("0") < spent < Decimal("0.000100"), spent


async def test_a_streamed_answer_reports_its_cost_in_the_usage_chunk(
    gateway: Proc, proxy_settings: Settings, market: Market
) -> None:
    buyer = new_buyer(gateway, proxy_settings, "1")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("POST", gateway.base_url + "/chat/completions", json=body, headers=buyer.bearer) as answer,
    ):
        assert answer.status_code == 200
        chunks = [orjson.loads(line[5:]) async for line in answer.aiter_lines() if line.startswith("data: {")]
    usage = chunks[-1]["usage"]
    expected = -(-(150_000 * usage["prompt_tokens"] + 600_000 * usage["completion_tokens"]) // 1_000_000)
    assert usage["cost"] == expected / 1_000_000


async def test_settled_usage_pays_the_seller_net_of_the_platform_fee(
    gateway: Proc, proxy_settings: Settings, market: Market, db: asyncpg.Pool
) -> None:
    buyer = new_buyer(gateway, proxy_settings, "1")
    async with db.acquire() as conn:
        seller_before = await ledger.balance_micro(conn, ledger.AccountKind.SELLER, market.seller.id)
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            gateway.base_url + "/chat/completions",
            content=orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}),
            headers=buyer.bearer,
        )
    assert answer.status_code == 200
    cost = int(Decimal(answer.headers["x-gateway-cost-usd"]) * 1_000_000)

    async def settled() -> bool:
        async with httpx.AsyncClient(timeout=10) as client:
            rows = (await client.get(gateway.url + "/api/billing/usage", headers=buyer.session)).json()["data"]
        return len(rows) == 1

    await await_until(settled, 15, "the request to appear in the buyer's usage")
    async with httpx.AsyncClient(timeout=10) as client:
        usage = (await client.get(gateway.url + "/api/billing/usage", headers=buyer.session)).json()["data"]
        statement = (await client.get(gateway.url + "/api/billing/transactions", headers=buyer.session)).json()
    assert usage[0]["cost_usd"] == answer.headers["x-gateway-cost-usd"] and usage[0]["model"] == "gpt-4o-mini"
    assert [t["type"] for t in statement["data"]] == ["usage", "credit"]
    assert statement["data"][0]["amount_usd"] == f"-{answer.headers['x-gateway-cost-usd']}"
    fee = cost * 10 // 100  # GATEWAY_PLATFORM_FEE defaults to 10 %, rounded down
    async with db.acquire() as conn:
        seller_after = await ledger.balance_micro(conn, ledger.AccountKind.SELLER, market.seller.id)
    assert seller_after - seller_before >= cost - fee  # other tests' requests may settle meanwhile
