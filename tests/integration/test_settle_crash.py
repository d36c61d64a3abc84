"""`aichat-gateway settle` killed with SIGKILL in the middle of a backlog loses and doubles nothing.

The worker runs as the real console script. It is frozen (SIGSTOP) at a moment some but not
all usage rows exist and it holds read-but-unacked entries, then killed; a second worker (another
pid, so another consumer) claims what the first had read and not acked, and settles the rest.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.ledger import AccountKind
from aichat_gateway.billing.meter import stream_key
from aichat_gateway.billing.settle import GROUP
from tests.support.scratch import TEST_REDIS_URL, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix
from tests.support.settlekit import (
    FUNDS,
    Expected,
    append,
    balances,
    funded_buyers,
    mixed_events,
    new_user,
    platform_balance,
    usage_totals,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(150)]

CLI = str(Path(sys.executable).with_name("aichat-gateway"))
EVENTS = 20_000
CLAIM_IDLE_MS = 1_000


@pytest.fixture
def dsn() -> Iterator[str]:
    with migrated_database("settle_crash") as url:
        yield url


@pytest.fixture
def prefix() -> Iterator[str]:
    with scratch_redis_prefix("sc") as p:
        yield p


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(TEST_REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(dsn)
    try:
        yield conn
    finally:
        await conn.close()


class Workers:
    """`aichat-gateway settle` processes; every one still running is killed at teardown."""

    def __init__(self, dsn: str, prefix: str, log_dir: Path) -> None:
        drop = ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "GATEWAY_CONFIG_FILE")
        self.env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("GATEWAY_")}
        self.env.update(
            {
                "DATABASE_URL": dsn,
                "REDIS_URL": TEST_REDIS_URL,
                "GATEWAY_REDIS_PREFIX": prefix,
                "GATEWAY_SECRET_KEY": "test-secret-key-" + "x" * 32,
                "GATEWAY_PLATFORM_FEE": "0.10",
                "GATEWAY_LOG_JSON": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str) -> subprocess.Popen[bytes]:
        argv = [CLI, "settle", "--block-ms", "100", "--claim-idle-ms", str(CLAIM_IDLE_MS)]
        with (self.log_dir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        self.started.append(proc)
        return proc

    def logs(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def workers(dsn: str, prefix: str, tmp_path: Path) -> Iterator[Workers]:
    owner = Workers(dsn, prefix, tmp_path)
    try:
        yield owner
    finally:
        owner.close()


async def rows(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM usage_records"))


async def pending(redis: Redis, stream: str) -> int:
    return int((await redis.xpending(stream, GROUP))["pending"])


async def exited(proc: subprocess.Popen[bytes], within: float) -> int:
    deadline = time.monotonic() + within
    while (code := proc.poll()) is None:
        assert time.monotonic() < deadline, "the worker did not exit"
        await asyncio.sleep(0.05)
    return code


def process_state(pid: int) -> str:
    # /proc/<pid>/stat: "pid (comm) state ..."; comm may hold spaces, so split after its ")".
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


async def freeze_holding_unacked(
    workers: Workers, name: str, proc: subprocess.Popen[bytes], db: asyncpg.Connection, redis: Redis, stream: str
) -> None:
    """Stop the worker `name` (SIGSTOP) at a moment it has committed some batches and holds read-but-unacked entries.

    Checking a running worker and then killing it races its XACK (CI once saw 0 pending after the
    kill); a stopped worker cannot ack, so what is checked is what the kill leaves behind.
    """
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, workers.logs(name)
        proc.send_signal(signal.SIGSTOP)
        while (state := process_state(proc.pid)) != "T":
            assert state != "Z", workers.logs(name)
            await asyncio.sleep(0.001)
        # One round trip first: an XACK the worker wrote just before it stopped is applied by then.
        await redis.ping()
        settled = await rows(db)
        if 0 < settled < EVENTS and await pending(redis, stream):
            return
        assert settled < EVENTS, "the worker finished before it could be killed: add events"
        assert time.monotonic() < deadline, f"no unacked entries after 60 s:\n{workers.logs(name)}"
        proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.01)


async def test_a_worker_killed_mid_backlog_loses_and_doubles_nothing(
    db: asyncpg.Connection, redis: Redis, prefix: str, workers: Workers
) -> None:
    buyers = await funded_buyers(db, 50)
    sellers = [await new_user(db) for _ in range(10)]
    events = mixed_events(buyers, sellers, EVENTS)
    await append(redis, prefix, events)

    stream = stream_key(prefix)
    first = workers.start("first")
    await freeze_holding_unacked(workers, "first", first, db, redis, stream)
    first.send_signal(signal.SIGKILL)
    assert await exited(first, 10) == -signal.SIGKILL
    assert 0 < await rows(db) < EVENTS
    orphaned = await pending(redis, stream)
    assert orphaned > 0

    second = workers.start("second")
    deadline = time.monotonic() + 90
    while await rows(db) < EVENTS or await pending(redis, stream):
        assert second.poll() is None, workers.logs("second")
        assert time.monotonic() < deadline, f"backlog not settled:\n{workers.logs('second')[-3000:]}"
        await asyncio.sleep(0.05)
    second.send_signal(signal.SIGTERM)
    assert await exited(second, 15) == 0, workers.logs("second")[-3000:]

    expected = Expected.of(events)
    assert await usage_totals(db) == (EVENTS, expected.cost, expected.transfers)
    assert await db.fetchval("SELECT sum(balance_micro) FROM ledger_accounts") == 0
    assert await balances(db, AccountKind.BUYER) == {b: FUNDS + expected.buyer[b] for b in buyers}
    assert await balances(db, AccountKind.SELLER) == expected.seller
    assert await platform_balance(db) == expected.platform
    assert await audit(db) == []
    assert '"usage_entry_dead"' not in workers.logs("first") + workers.logs("second")
    assert '"usage_entries_claimed"' in workers.logs("second")  # the orphaned entries, from the dead consumer
