"""Session fixtures of the suites that run gateway processes (tests/integration, tests/faults).

Each of those conftests assigns these functions to names of its own, and pytest registers a
conftest's fixtures for its folder only, so each suite gets its own instances: a full `make test`
has the faults suite on a second, small session database that is audited on its own.

The gateways get the `settings` fixture's variables (DATABASE_URL, REDIS_URL, GATEWAY_SECRET_KEY,
GATEWAY_REDIS_PREFIX, GATEWAY_ALLOW_PRIVATE_UPSTREAMS) but a database and Redis prefix of their
own: the session database is shared with tests that list gpt-4o-mini cheaper, on dead upstreams,
and the router would rightly prefer those listings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Iterator

import asyncpg
import pytest
from redis.asyncio import Redis

from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.billing.settle import Settler
from aichat_gateway.config.settings import Settings, load_settings
from tests.support.gateways import GatewayFactory
from tests.support.processes import Processes
from tests.support.scratch import TEST_REDIS_URL, TEST_SECRET, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix


@pytest.fixture(scope="session")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    owner = Processes(tmp_path_factory.mktemp("proxy-processes"))
    try:
        yield owner
    finally:
        owner.close()


@pytest.fixture(scope="session")
def proxy_database_url() -> Iterator[str]:
    """A migrated database of the proxy tests' own, dropped at the end."""
    with migrated_database("test_proxy") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def proxy_redis_prefix() -> Iterator[str]:
    """A Redis key prefix of the proxy tests' own; its keys are deleted at the end."""
    with scratch_redis_prefix("tp") as prefix:
        yield prefix


@pytest.fixture(scope="session")
def proxy_settings(proxy_database_url: str, proxy_redis_prefix: str) -> Settings:
    """What the `settings` fixture holds, on the proxy tests' own database and Redis prefix."""
    return load_settings(
        DATABASE_URL=proxy_database_url,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=TEST_SECRET,
        GATEWAY_REDIS_PREFIX=proxy_redis_prefix,
        GATEWAY_ALLOW_PRIVATE_UPSTREAMS=True,
        GATEWAY_LOG_JSON=True,
        GATEWAY_WORKER_IN_SERVE=False,  # as the root conftest's: no job worker in test apps
    )


@pytest.fixture(scope="session", autouse=True)
def ledger_invariants_hold_after_the_session(proxy_settings: Settings) -> Iterator[None]:
    """DESIGN.md: the ledger invariants are checked after the integration tests. Whatever the
    gateways recorded is settled first (a worker of our own drains the stream), then audited."""
    yield

    async def settle_and_audit() -> list[str]:
        db = await asyncpg.create_pool(proxy_settings.database_url, min_size=1, max_size=4)
        redis = Redis.from_url(proxy_settings.redis_url)
        try:
            hot = HotBalances(redis, proxy_settings.redis_prefix)
            worker = Settler(
                db,
                redis,
                proxy_settings.redis_prefix,
                proxy_settings.platform_fee,
                after_commit=hot.applied,
                consumer="test-session-end",
                block_ms=10,
                claim_idle_ms=0,
            )
            while await worker.run_once():
                pass
            async with db.acquire() as conn:
                return [f"{b.invariant}: {b.detail}" for b in await audit(conn)]
        finally:
            await redis.aclose()
            await db.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker_thread:
        breaches = worker_thread.submit(asyncio.run, settle_and_audit()).result()
    assert breaches == [], "ledger invariants broken after the integration tests:\n" + "\n".join(breaches)


@pytest.fixture(scope="session")
def gateway_factory(processes: Processes, proxy_settings: Settings) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(processes, proxy_settings)
    try:
        yield factory
    finally:
        # Before the session's database and Redis keys are dropped (this fixture depends on them).
        processes.close(only=factory.gateways)
