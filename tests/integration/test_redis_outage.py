"""Redis down: /v1 answers 503 with a clear error and charges nothing, then recovers by itself; a
Redis that comes back empty (this one keeps nothing on disk) gets each buyer's hot balance rebuilt
from Postgres before that buyer is admitted again.

The gateway here has a Redis server of its own, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import httpx
import orjson
import pytest
import redis as redis_sync

from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.config.settings import Settings
from tests.support.fakes import Fakes
from tests.support.gateways import GatewayFactory
from tests.support.market import Market, create_listing, fund, provider_key, register_and_login, wait_for_models
from tests.support.ports import free_port
from tests.support.processes import Proc, Processes
from tests.support.waiting import await_until, wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.faults,
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

    def get(self, key: str) -> int | None:
        client = redis_sync.Redis(port=self.port)
        try:
            value = client.get(key)
        finally:
            client.close()
        return int(value) if value is not None else None

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


async def ask(gateway: Proc, key: str, model: str = "gpt-4o-mini") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(
            gateway.base_url + "/chat/completions",
            content=orjson.dumps({"model": model, "messages": MESSAGES, "max_tokens": 50}),
            headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
        )


async def until_served(gateway: Proc, key: str, model: str = "gpt-4o-mini") -> httpx.Response:
    """After a Redis restart each pooled connection fails once (503, and the gateway drops the idle
    ones); ask until an answer comes back."""
    answers: list[httpx.Response] = []

    async def served() -> bool:
        answers.append(await ask(gateway, key, model))
        return answers[-1].status_code == 200

    await await_until(served, 20, "the gateway to serve again once Redis is back", interval=0.1)
    assert {a.status_code for a in answers} <= {200, 503}, [a.text for a in answers if a.status_code not in (200, 503)]
    return answers[-1]


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


async def test_an_empty_redis_gets_capacity_counters_rebuilt_from_settled_usage(
    redis_gateway: Proc, own_redis: OwnRedis, proxy_settings: Settings, market: Market, fakes: Fakes
) -> None:
    model = f"capped-{uuid.uuid4().hex[:8]}"
    listing = create_listing(
        redis_gateway,
        market.seller,
        {
            "name": "daily capped",
            "provider": "openai",
            "base_url": fakes.main.base_url,
            "api_key": provider_key(),
            "models": [{"model": model, "upstream_model": "gpt-4o-mini"}],
            "pricing": {"input_usd_per_million": "1", "output_usd_per_million": "2"},
            "limits": {"daily_tokens": 1_000_000},
            "attest_resale": True,
        },
    )
    await until_served(redis_gateway, market.buyer_key)  # the previous test restarted Redis
    buyer = register_and_login(redis_gateway, "capacity-rebuild", "capacity-rebuild-password")
    fund(proxy_settings, buyer.id, "1")
    async with httpx.AsyncClient(timeout=10) as client:
        key = (await client.post(redis_gateway.url + "/api/keys", json={"name": "k"}, headers=buyer.auth)).json()["key"]
    await asyncio.to_thread(wait_for_models, redis_gateway, key, [model])
    for _ in range(2):
        assert (await ask(redis_gateway, key, model)).status_code == 200

    conn = await asyncpg.connect(proxy_settings.database_url)
    try:

        async def settled_tokens() -> int:
            value = await conn.fetchval(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage_records WHERE listing_id = $1",
                uuid.UUID(listing["id"]),
            )
            return int(value)

        async def settled_rows() -> int:
            count = await conn.fetchval(
                "SELECT count(*) FROM usage_records WHERE listing_id = $1", uuid.UUID(listing["id"])
            )
            return int(count)

        await await_until(lambda: _at_least(settled_rows, 2), 15, "both requests on the capped listing to settle")
        before = await settled_tokens()
        day = datetime.now(UTC).strftime("%Y%m%d")
        counter = f"{{{proxy_settings.redis_prefix}:l:{listing['id']}}}:tpd:{day}"
        assert own_redis.get(counter) == before  # what capacity counted is what was settled

        own_redis.kill()
        own_redis.start()  # empty: the day's count would start again at zero
        answer = await until_served(redis_gateway, key, model)  # a cold hold notices the loss, rebuilds first
        used = answer.json()["usage"]
        # Rebuilt: without it the day would restart near zero. (At least, not exactly: a request
        # that failed on a dead pooled connection right after the restart may have taken capacity
        # whose release was lost with it; that errs on the seller's side, never past a cap.)
        assert own_redis.get(counter) >= before + used["prompt_tokens"] + used["completion_tokens"]
    finally:
        await conn.close()


async def _at_least(read: Callable[[], Awaitable[int]], floor: int) -> bool:
    return await read() >= floor


async def test_usage_events_an_empty_redis_lost_are_logged_and_counted_one_by_one(
    gateway_factory: GatewayFactory, own_redis: OwnRedis, proxy_settings: Settings, market: Market
) -> None:
    """Settlement off on this gateway, so its events wait in the stream when Redis dies with them."""
    prefix = f"tlost{uuid.uuid4().hex[:6]}"
    gateway = await asyncio.to_thread(
        gateway_factory.start,
        "gateway-lost-usage",
        REDIS_URL=own_redis.url,
        GATEWAY_REDIS_PREFIX=prefix,
        GATEWAY_SETTLE_IN_SERVE="0",
    )
    buyer = register_and_login(gateway, "lost-usage", "lost-usage-password")
    fund(proxy_settings, buyer.id, "1")
    async with httpx.AsyncClient(timeout=10) as client:
        key = (await client.post(gateway.url + "/api/keys", json={"name": "k"}, headers=buyer.auth)).json()["key"]
    served = [await ask(gateway, key) for _ in range(3)]
    assert [a.status_code for a in served] == [200, 200, 200]
    unbilled = {a.headers["x-request-id"]: int(Decimal(a.headers["x-gateway-cost-usd"]) * 1_000_000) for a in served}
    # Each event is written just after its answer went out: all three must be in Redis before it dies.
    events = redis_sync.Redis(port=own_redis.port)
    try:
        wait_until(lambda: events.xlen(f"{prefix}:usage") == 3, 5, "the three usage events to be written")
    finally:
        events.close()

    own_redis.kill()
    own_redis.start()  # empty: the three events are gone
    await until_served(gateway, key)  # its cold hold notices the loss

    def lost_lines() -> list[dict[str, object]]:
        lines = [orjson.loads(line) for line in gateway.logs().splitlines() if '"usage_event_lost"' in line]
        return [line for line in lines if line.get("event") == "usage_event_lost"]

    await await_until(lambda: len(lost_lines()) == 3, 10, "the lost events to be logged")
    assert {str(line["lost_request_id"]): line["cost_micro"] for line in lost_lines()} == unbilled
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(gateway.url + "/metrics")).text
    assert "gateway_usage_events_lost_total 3.0" in metrics
