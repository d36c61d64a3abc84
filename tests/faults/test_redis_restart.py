"""Redis restarted under light load, with persistence (appendonly yes, appendfsync always): nothing is
lost. Every request the buyer was served has its usage row once settled, with the cost the buyer
was shown; requests refused while Redis was away (503, "nothing was charged") cost nothing (a hold
Redis kept but never acknowledged stays reserved until its deadline, then is swept); the gateway
counts no lost usage event; the books balance.

Redis without persistence loses what it held when it restarts; that case (the loss noticed, counted
per request, capacity counters and balances rebuilt) is tests/integration/test_redis_outage.py.

The Redis server here is the test module's own (its data dir under tmp_path), and so is the gateway
pointed at it.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from aichat_gateway.billing.holdplan import buyer_tag
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.config.settings import Settings
from aichat_gateway.server.app import create_app
from tests.support.faults import MESSAGES, Buyer, FaultFakes, FaultMarket, assert_books_balance, new_buyer
from tests.support.gateways import GatewayFactory
from tests.support.ports import free_port
from tests.support.processes import Proc, Processes
from tests.support.waiting import await_until, wait_until

pytestmark = [
    pytest.mark.faults,
    pytest.mark.integration,
    pytest.mark.timeout(90),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary"),
]

CLIENTS = 3  # light load: three buyers' programs asking one after the other, side by side
SERVED_BEFORE = 5  # answers each client gets before the restart, and again after it


class PersistentRedis:
    """A redis-server of the test's own that writes every command to its append-only file."""

    def __init__(self, processes: Processes, data_dir: Path) -> None:
        self.processes = processes
        self.data_dir = data_dir
        self.port = free_port()
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cli(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["redis-cli", "-p", str(self.port), *args], capture_output=True, check=False, timeout=10)

    def start(self) -> None:
        argv = [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--dir", str(self.data_dir)]
        argv += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        self.proc = self.processes.spawn("persistent-redis", argv, {}, self.port)
        wait_until(lambda: self.cli("ping").stdout.strip() == b"PONG", 10, "the persistent Redis to answer")

    def shutdown(self) -> None:
        """SHUTDOWN: Redis stops taking commands, fsyncs the append-only file and exits."""
        assert self.proc is not None
        self.cli("shutdown")
        assert self.proc.popen.wait(timeout=10) == 0, self.proc.logs()[-2000:]

    def kill(self) -> None:
        """SIGKILL: no goodbye; with appendfsync always every acknowledged write is on disk already."""
        assert self.proc is not None
        self.processes.close(only=[self.proc])


@pytest.fixture(scope="module")
def persistent_redis(processes: Processes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PersistentRedis]:
    server = PersistentRedis(processes, tmp_path_factory.mktemp("persistent-redis"))
    server.start()
    yield server
    if server.proc is not None:
        processes.close(only=[server.proc])


@pytest.fixture(scope="module")
def redis_settings(proxy_settings: Settings, persistent_redis: PersistentRedis) -> Settings:
    """The faults session's database, the module's own Redis and prefix."""
    return proxy_settings.model_copy(
        update={"redis_url": persistent_redis.url, "redis_prefix": f"tpr{uuid.uuid4().hex[:8]}"}
    )


@pytest.fixture(scope="module")
def persistent_gateway(
    gateway_factory: GatewayFactory, redis_settings: Settings, fault_market: FaultMarket, fault_fakes: FaultFakes
) -> Proc:
    return gateway_factory.start(
        "gateway-persistent-redis", REDIS_URL=redis_settings.redis_url, GATEWAY_REDIS_PREFIX=redis_settings.redis_prefix
    )


@dataclass
class Load:
    """CLIENTS programs asking one after another until told to stop; every answer is kept."""

    gateway: Proc
    buyer: Buyer
    model: str
    answers: list[httpx.Response] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self) -> None:
        body = {"model": self.model, "messages": MESSAGES, "max_tokens": 50}
        async with httpx.AsyncClient(base_url=self.gateway.base_url, headers=self.buyer.headers, timeout=10) as http:
            while not self.stop.is_set():
                self.answers.append(await http.post("/chat/completions", json=body))

    def served(self) -> list[httpx.Response]:
        return [a for a in self.answers if a.status_code == 200]

    async def until_served(self, count: int, within: float) -> None:
        await await_until(lambda: len(self.served()) >= count, within, f"{count} answers served", interval=0.02)


async def lost_events_counted(gateway: Proc) -> float:
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(gateway.url + "/metrics")).text
    [line] = [x for x in metrics.splitlines() if x.startswith("gateway_usage_events_lost_total ")]
    return float(line.split()[1])


async def restart_under_load(
    gateway: Proc, settings: Settings, fault_market: FaultMarket, tag: str, restart: Callable[[], None]
) -> tuple[Load, Buyer]:
    """Light load on a buyer of its own; `restart` once each client was served a few times; then on
    until each was served as many times again."""
    buyer = await asyncio.to_thread(new_buyer, gateway, settings, tag, [fault_market.models["main"]])
    load = Load(gateway, buyer, fault_market.models["main"])
    clients = [asyncio.create_task(load.client()) for _ in range(CLIENTS)]
    try:
        await load.until_served(CLIENTS * SERVED_BEFORE, 15)
        await asyncio.to_thread(restart)
        restarted_after = len(load.answers)
        await load.until_served(len(load.served()) + CLIENTS * SERVED_BEFORE, 20)
    finally:
        load.stop.set()
        await asyncio.gather(*clients)
    assert len(load.answers) > restarted_after, "the load went on across the restart"
    return load, buyer


async def settled_everything(settings: Settings) -> bool:
    """The settlers' consumer group has read and acknowledged every usage event."""
    redis = Redis.from_url(settings.redis_url)
    try:
        groups = await redis.xinfo_groups(f"{settings.redis_prefix}:usage")
    finally:
        await redis.aclose()
    return all(g["pending"] == 0 and g["lag"] == 0 for g in groups) and bool(groups)


async def usage_rows(settings: Settings, buyer: Buyer) -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch("SELECT * FROM usage_records WHERE buyer_id = $1", uuid.UUID(buyer.id))
    finally:
        await conn.close()
    return {r["request_id"]: dict(r) for r in rows}


async def assert_nothing_lost(load: Load, buyer: Buyer, gateway: Proc, settings: Settings) -> None:
    unexpected = [a.text for a in load.answers if a.status_code not in (200, 503)]
    assert unexpected == []
    refused = [a for a in load.answers if a.status_code == 503]
    assert all("nothing was charged" in a.json()["error"]["message"] for a in refused)
    shown = {
        a.headers["x-request-id"]: int(Decimal(a.headers["x-gateway-cost-usd"]) * 1_000_000) for a in load.served()
    }

    await await_until(lambda: settled_everything(settings), 15, "every usage event to settle", interval=0.1)
    rows = await usage_rows(settings, buyer)
    assert {rid: row["cost_micro"] for rid, row in rows.items() if row["status"] == 200} == shown
    # A refused request has a row (costing nothing) if Redis was back by the time it was recorded.
    assert {rid for rid, row in rows.items() if row["status"] != 200} <= {a.headers["x-request-id"] for a in refused}
    assert all(row["cost_micro"] == 0 for row in rows.values() if row["status"] != 200)
    assert await lost_events_counted(gateway) == 0.0
    await void_holds_left_by_refused_requests(settings, buyer, {a.headers["x-request-id"] for a in refused})
    await assert_books_balance(settings, buyer, sum(shown.values()))


async def void_holds_left_by_refused_requests(settings: Settings, buyer: Buyer, refused_ids: set[str]) -> None:
    """A hold Redis wrote to disk but died before acknowledging was refused to the buyer (503,
    nothing charged) and is still reserved: only such holds may be open, and they are voided once
    their deadline passes, like those of a crashed gateway (swept here with a clock past it)."""
    redis = Redis.from_url(settings.redis_url)
    try:
        held = await redis.hkeys(f"{buyer_tag(settings.redis_prefix, buyer.id)}:holds")
        assert {h.decode() for h in held} <= refused_ids, "a served request's hold is still open"
        later = HotBalances(redis, settings.redis_prefix, clock=lambda: time.time() + settings.hold_ttl_seconds + 1)
        assert await later.sweep() == len(held)
    finally:
        await redis.aclose()


async def test_a_graceful_redis_restart_under_load_loses_no_usage_and_balances_the_books(
    persistent_gateway: Proc, persistent_redis: PersistentRedis, redis_settings: Settings, fault_market: FaultMarket
) -> None:
    def restart() -> None:
        persistent_redis.shutdown()
        persistent_redis.start()

    load, buyer = await restart_under_load(persistent_gateway, redis_settings, fault_market, "redis-shutdown", restart)
    await assert_nothing_lost(load, buyer, persistent_gateway, redis_settings)


async def test_a_killed_redis_restarted_under_load_loses_no_usage_and_balances_the_books(
    persistent_gateway: Proc, persistent_redis: PersistentRedis, redis_settings: Settings, fault_market: FaultMarket
) -> None:
    def restart() -> None:
        persistent_redis.kill()
        persistent_redis.start()

    load, buyer = await restart_under_load(persistent_gateway, redis_settings, fault_market, "redis-sigkill", restart)
    await assert_nothing_lost(load, buyer, persistent_gateway, redis_settings)


async def test_after_a_redis_restart_the_gateways_client_reconnects_each_dead_pooled_connection(
    persistent_redis: PersistentRedis, redis_settings: Settings
) -> None:
    """Every connection in the pool dies with the restart; the first command on each fails on the
    dead socket and must be retried on a new one (the one retry app.py configures), not fail a
    request. In-process, and the restart blocks the loop, so no background task touches the pool
    in between."""
    app = create_app(redis_settings)
    async with app.router.lifespan_context(app):
        redis = app.state.services.redis
        await asyncio.gather(*(redis.ping() for _ in range(8)))
        persistent_redis.kill()
        persistent_redis.start()
        answers = await asyncio.gather(*(redis.ping() for _ in range(8)), return_exceptions=True)
    assert answers == [True] * 8
