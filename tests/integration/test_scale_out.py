"""Scale-out: two gateway processes and two settlement workers share one Redis and one Postgres,
and limits, balances, breakers and revocations hold across them (DESIGN.md, Scale-out).

The four processes get a Redis prefix of their own: only these two `aichat-gateway settle`
workers settle their events (the gateways run with GATEWAY_SETTLE_IN_SERVE=0).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.meter import decode_entry, stream_key
from aichat_gateway.config.settings import Settings
from tests.support.fakes import Fakes
from tests.support.gateways import GatewayFactory
from tests.support.market import (
    PRICE_CHEAP,
    PRICE_DEAR,
    Market,
    create_listing,
    fund,
    provider_key,
    register_and_login,
    wait_for_models,
)
from tests.support.ports import free_port
from tests.support.processes import CLI, Proc, Processes
from tests.support.scratch import redis_prefix
from tests.support.waiting import await_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

FAIL_MAX = 3
MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass
class Cluster:
    a: Proc
    b: Proc
    settlers: list[Proc]
    prefix: str


@pytest.fixture(scope="module")
def cluster(gateway_factory: GatewayFactory, processes: Processes, market: Market) -> Iterator[Cluster]:
    with redis_prefix("tscale") as prefix:
        options = {
            "GATEWAY_REDIS_PREFIX": prefix,
            "GATEWAY_SETTLE_IN_SERVE": "0",
            "GATEWAY_BREAKER_FAIL_MAX": str(FAIL_MAX),
            "GATEWAY_BREAKER_RESET_TIMEOUT": "600",
        }
        a = gateway_factory.start("gateway-scale-a", **options)
        b = gateway_factory.start("gateway-scale-b", **options)
        settlers = [
            processes.spawn(f"settle-{i}", [CLI, "settle"], gateway_factory.env(**options), free_port())
            for i in range(2)
        ]
        yield Cluster(a, b, settlers, prefix)


def list_model(gateway: Proc, market: Market, base_url: str, price: dict[str, str], **extra: object) -> str:
    model = f"scale-{uuid.uuid4().hex[:8]}"
    create_listing(
        gateway,
        market.seller,
        {
            "name": "scale-out",
            "provider": "openai",
            "base_url": base_url,
            "api_key": provider_key(),
            "models": [{"model": model, "upstream_model": "gpt-4o-mini"}],
            "pricing": price,
            "attest_resale": True,
            **extra,
        },
    )
    return model


async def ask(client: httpx.AsyncClient, gateway: Proc, key: str, model: str, **extra: object) -> httpx.Response:
    return await client.post(
        gateway.base_url + "/chat/completions",
        content=orjson.dumps({"model": model, "messages": MESSAGES, **extra}),
        headers={"Authorization": f"Bearer {key}", "content-type": "application/json"},
    )


def buyer_key(gateway: Proc, settings: Settings, funds_usd: str) -> tuple[dict[str, str], str, str]:
    account = register_and_login(gateway, "scale", "scale-out-password")
    fund(settings, account.id, funds_usd)
    created = httpx.post(gateway.url + "/api/keys", json={"name": "k"}, headers=account.auth, timeout=10).json()
    return account.auth, created["id"], created["key"]


async def test_a_listings_rpm_limit_holds_across_two_gateways(
    cluster: Cluster, market: Market, fakes: Fakes, proxy_settings: Settings
) -> None:
    model = list_model(cluster.a, market, fakes.main.base_url, PRICE_CHEAP, limits={"rpm": 10})
    _, _, key = buyer_key(cluster.a, proxy_settings, "5")
    for gateway in (cluster.a, cluster.b):
        await asyncio.to_thread(wait_for_models, gateway, key, [model])
    async with httpx.AsyncClient(timeout=20) as client:
        answers = await asyncio.gather(*(ask(client, g, key, model) for _ in range(15) for g in (cluster.a, cluster.b)))
    statuses = [a.status_code for a in answers]
    # 10 per UTC minute: a minute boundary during the burst may let through up to 10 more.
    assert statuses.count(200) in range(10, 21) and statuses.count(429) == 30 - statuses.count(200)


async def test_a_buyers_balance_holds_across_two_gateways(
    cluster: Cluster, market: Market, fakes: Fakes, proxy_settings: Settings
) -> None:
    model = list_model(
        cluster.a, market, fakes.sleepy.base_url, {"input_usd_per_million": "1", "output_usd_per_million": "2"}
    )
    body = orjson.dumps({"model": model, "messages": MESSAGES, "max_tokens": 1000})
    hold = -(-(1_000_000 * len(body) + 2_000_000 * 1000) // 1_000_000)
    n = 3
    _, _, key = buyer_key(cluster.a, proxy_settings, f"{Decimal(n * hold) / 1_000_000:.6f}")
    for gateway in (cluster.a, cluster.b):
        await asyncio.to_thread(wait_for_models, gateway, key, [model])
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100)) as client:
        answers = await asyncio.gather(
            *(
                client.post(g.base_url + "/chat/completions", content=body, headers={"Authorization": f"Bearer {key}"})
                for _ in range(5 * n)
                for g in (cluster.a, cluster.b)
            )
        )
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == n and statuses.count(402) == 9 * n


async def test_a_failing_listings_breaker_is_shared_by_two_gateways(
    cluster: Cluster, market: Market, fakes: Fakes, proxy_settings: Settings
) -> None:
    model = list_model(cluster.a, market, fakes.failing.base_url, PRICE_CHEAP)
    create_listing(
        cluster.a,
        market.seller,
        {
            "name": "scale-out good",
            "provider": "openai",
            "base_url": fakes.main.base_url,
            "api_key": provider_key(),
            "models": [{"model": model, "upstream_model": "gpt-4o-mini"}],
            "pricing": PRICE_DEAR,
            "attest_resale": True,
        },
    )
    _, _, key = buyer_key(cluster.a, proxy_settings, "5")
    for gateway in (cluster.a, cluster.b):
        await asyncio.to_thread(wait_for_models, gateway, key, [model])
    before = fakes.failing.stats()["requests"]
    async with httpx.AsyncClient(timeout=20) as client:
        for i in range(16):  # alternating: each gateway learns from the other's failures
            answer = await ask(client, (cluster.a, cluster.b)[i % 2], key, model)
            assert answer.status_code == 200
    assert fakes.failing.stats()["requests"] - before == FAIL_MAX


async def test_a_key_revoked_on_one_gateway_is_refused_by_the_other_within_a_second(
    cluster: Cluster, market: Market, proxy_settings: Settings
) -> None:
    session, key_id, key = buyer_key(cluster.a, proxy_settings, "1")
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await ask(client, cluster.b, key, "gpt-4o-mini")).status_code == 200  # cached on b
        assert (await client.delete(f"{cluster.a.url}/api/keys/{key_id}", headers=session)).status_code == 204

        async def refused() -> bool:
            return (await ask(client, cluster.b, key, "gpt-4o-mini")).status_code == 401

        await await_until(refused, 1.0, "gateway b to refuse the revoked key")


async def test_two_settlement_workers_settle_everything_once(cluster: Cluster, proxy_settings: Settings) -> None:
    redis = Redis.from_url(proxy_settings.redis_url)
    conn = await asyncpg.connect(proxy_settings.database_url)
    try:
        stream = stream_key(cluster.prefix)
        recorded = {decode_entry(fields)["request_id"] for _, fields in await redis.xrange(stream)}
        assert len(recorded) > 40  # the tests above, through both gateways

        async def settled() -> bool:
            rows = await conn.fetch("SELECT request_id FROM usage_records WHERE request_id = ANY($1)", list(recorded))
            return len(rows) == len(recorded)

        await await_until(settled, 30, "the two settlers to settle every recorded request", interval=0.2)
        assert all(s.alive() for s in cluster.settlers)
        assert await audit(conn) == []
        logs = "".join(s.logs() for s in cluster.settlers)
        assert '"usage_entry_dead"' not in logs
        assert logs.count('"settler_started"') == 2
    finally:
        await conn.close()
        await redis.aclose()
