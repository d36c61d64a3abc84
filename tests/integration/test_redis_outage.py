"""Redis down: /v1 answers 503 with a clear error and charges nothing, then recovers by itself; a
Redis that comes back empty (this one keeps nothing on disk) gets each buyer's hot balance rebuilt
from Postgres before that buyer is admitted again.

The gateway here has a Redis server of its own, so stopping it disturbs no other test.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal

import asyncpg
import httpx
import orjson
import pytest

from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.config.settings import Settings
from tests.integration.conftest import (
    GatewayFactory,
    Market,
    Proc,
    Processes,
    await_until,
    free_port,
    fund,
    register_and_login,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary"),
]

MESSAGES = [{"role": "user", "content": "hello"}]


class OwnRedis:
    def __init__(self, processes: Processes) -> None:
        self.processes = processes
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.proc = self.processes.spawn("own-redis", argv, {}, self.port)

        def answers() -> bool:
            return (
                subprocess.run(
                    ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False
                ).stdout.strip()
                == b"PONG"
            )

        wait_until(answers, 10, "the test's own Redis to answer")

    def kill(self) -> None:
        assert self.proc is not None
        self.processes.close(only=[self.proc])


@pytest.fixture(scope="module")
def own_redis(processes: Processes) -> Iterator[OwnRedis]:
    server = OwnRedis(processes)
    server.start()
    yield server
    if server.proc is not None:
        processes.close(only=[server.proc])


@pytest.fixture(scope="module")
def redis_gateway(gateway_factory: GatewayFactory, own_redis: OwnRedis, market: Market) -> Proc:
    return gateway_factory.start("gateway-own-redis", REDIS_URL=own_redis.url)


async def ask(gateway: Proc, key: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            gateway.base_url + "/chat/completions",
            content=orjson.dumps({"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 50}),
            headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
        )


async def buyer_balance(settings: Settings, buyer_id: str) -> int:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await ledger.balance_micro(conn, ledger.AccountKind.BUYER, buyer_id)
    finally:
        await conn.close()


async def test_redis_down_answers_503_charges_nothing_and_an_empty_redis_is_rebuilt_from_postgres(
    redis_gateway: Proc, own_redis: OwnRedis, proxy_settings: Settings
) -> None:
    buyer = register_and_login(redis_gateway, "redis-outage", "redis-outage-password")
    fund(proxy_settings, buyer.id, "1")
    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(redis_gateway.url + "/api/keys", json={"name": "k"}, headers=buyer.auth)
    key = created.json()["key"]

    first = await ask(redis_gateway, key)
    assert first.status_code == 200, first.text
    first_cost = int(Decimal(first.headers["x-gateway-cost-usd"]) * 1_000_000)

    async def settled(expected: int) -> bool:
        return await buyer_balance(proxy_settings, buyer.id) == expected

    await await_until(lambda: settled(1_000_000 - first_cost), 15, "the first request to settle")

    own_redis.kill()
    down = await ask(redis_gateway, key)
    assert down.status_code == 503, down.text
    error = down.json()["error"]
    assert error["code"] == "service_unavailable" and "nothing was charged" in error["message"]

    own_redis.start()  # back, and empty: no balances, no scripts, no consumer group

    async def served() -> bool:
        return (await ask(redis_gateway, key)).status_code == 200

    await await_until(served, 20, "the gateway to serve again once Redis is back", interval=0.2)
    async with httpx.AsyncClient(timeout=10) as client:
        shown = (await client.get(redis_gateway.url + "/api/billing/balance", headers=buyer.auth)).json()
    # Rebuilt from Postgres (1 USD minus the first request), then charged for what it served since.
    spent_since = 1_000_000 - first_cost - int(Decimal(shown["balance_usd"]) * 1_000_000)
    assert 0 < spent_since < 1_000, shown

    await await_until(lambda: settled(1_000_000 - first_cost - spent_since), 15, "the new requests to settle")
    conn = await asyncpg.connect(proxy_settings.database_url)
    try:
        assert await audit(conn) == []
    finally:
        await conn.close()
