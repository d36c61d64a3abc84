"""Postgres down for 30 s under load: the gateway keeps serving buyers within their balance from
Redis and its caches, its settlement worker waits, and once Postgres is back every request is
settled exactly once (DESIGN.md: zero Postgres queries per request in the steady state).

The gateway reaches Postgres through tests/support/tcpproxy.py (cut = every connection reset, new ones
refused) and has a Redis prefix of its own, so only its own settlement worker can settle its events.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import asyncpg
import httpx
import orjson
import pytest

from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.config.settings import Settings
from tests.support.gateways import GatewayFactory
from tests.support.market import Market, fund, register_and_login
from tests.support.processes import Proc
from tests.support.scratch import redis_prefix
from tests.support.tcpproxy import TcpProxy
from tests.support.waiting import await_until

OUTAGE_SECONDS = 30.0  # the figure
WORKERS = 4
FUNDS_USD = "5"

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(OUTAGE_SECONDS + 60)]

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture
def own_prefix() -> Iterator[str]:
    with redis_prefix("tpgo") as prefix:
        yield prefix


@pytest.fixture
async def proxy(proxy_settings: Settings) -> AsyncIterator[TcpProxy]:
    started = await TcpProxy.for_url(proxy_settings.database_url).start()
    yield started
    await started.close()


async def test_postgres_down_for_30_s_under_load_serves_every_request_and_settles_each_once_after(
    gateway_factory: GatewayFactory, proxy: TcpProxy, proxy_settings: Settings, own_prefix: str, market: Market
) -> None:
    gateway: Proc = await asyncio.to_thread(
        gateway_factory.start,
        "gateway-pg-outage",
        DATABASE_URL=proxy.url_through(proxy_settings.database_url),
        GATEWAY_REDIS_PREFIX=own_prefix,
        GATEWAY_KEY_CACHE_TTL="2",  # expires many times during the outage: served from the stale entry
    )
    buyer = await asyncio.to_thread(register_and_login, gateway, "pg-outage", "pg-outage-password")
    await asyncio.to_thread(fund, proxy_settings, buyer.id, FUNDS_USD)
    async with httpx.AsyncClient(timeout=30) as client:
        key = (await client.post(gateway.url + "/api/keys", json={"name": "k"}, headers=buyer.auth)).json()["key"]
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        body = orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50})

        async def one() -> httpx.Response:
            return await client.post(gateway.base_url + "/chat/completions", content=body, headers=headers)

        warm = await one()  # key cached, hot balance loaded from Postgres
        assert warm.status_code == 200, warm.text
        costs = [Decimal(warm.headers["x-gateway-cost-usd"])]

        proxy.cut()
        cut_at = time.monotonic()
        statuses: list[int] = []

        async def load() -> None:
            while time.monotonic() - cut_at < OUTAGE_SECONDS:
                answer = await one()
                statuses.append(answer.status_code)
                if answer.status_code == 200:
                    costs.append(Decimal(answer.headers["x-gateway-cost-usd"]))

        await asyncio.gather(*(load() for _ in range(WORKERS)))
        refused_during = proxy.refused
        proxy.restore()

    assert len(statuses) > 100 and set(statuses) == {200}, sorted(set(statuses))
    assert refused_during > 0  # the gateway really did try Postgres (settlement, polls) and failed

    spent = int(sum(costs) * 1_000_000)
    conn = await asyncpg.connect(proxy_settings.database_url)
    try:

        async def settled() -> bool:
            balance = await ledger.balance_micro(conn, ledger.AccountKind.BUYER, buyer.id)
            return balance == int(Decimal(FUNDS_USD) * 1_000_000) - spent

        await await_until(settled, 30, "the outage's requests to settle", interval=0.2)
        rows = await conn.fetchval("SELECT count(*) FROM usage_records WHERE buyer_id = $1", buyer.id)
        assert rows == len(costs)
        assert await audit(conn) == []
    finally:
        await conn.close()
