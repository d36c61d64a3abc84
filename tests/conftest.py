"""Shared fixtures: a throw-away Postgres database and Redis key prefix per test run.

Tests talk to the real Postgres and Redis on 127.0.0.1 (never mocks), or to embedded ones that
tests/support/scratch.py starts when nothing answers there. Each run creates its own
database `aichat_test_<random>` and Redis prefix `t<random>` and removes both at the end, so runs
never see each other's state. Data inside a run is isolated by random e-mails and names.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from aichat_gateway.config.settings import Settings, load_settings
from tests.support.scratch import LOCAL_SERVICES, TEST_REDIS_URL, TEST_SECRET, migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix


def pytest_sessionstart(session: pytest.Session) -> None:
    """Say when the run uses embedded servers (tests/support/scratch.py); also under -q."""
    line = LOCAL_SERVICES.summary()
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if line and reporter is not None:
        reporter.write_line(line)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The browser suite (tests/e2e) runs last: Playwright's sync API keeps an event loop running in
    the main thread while its browser is open (a session fixture), and the asyncio tests and
    fixtures of the other suites cannot run inside it."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/e2e/"))


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with migrated_database("test") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    with scratch_redis_prefix("t") as prefix:
        yield prefix


@pytest.fixture
def settings(database_url: str, redis_prefix: str) -> Settings:
    return load_settings(
        DATABASE_URL=database_url,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=TEST_SECRET,
        GATEWAY_REDIS_PREFIX=redis_prefix,
        GATEWAY_ALLOW_PRIVATE_UPSTREAMS=True,
        GATEWAY_LOG_JSON=True,
        # No job worker in the apps tests build (tests/integration/test_jobs_queue.py starts its own):
        # it would take jobs, and fire the weekly payout run in a run that spans Monday 06:00 UTC.
        GATEWAY_WORKER_IN_SERVE=False,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    from aichat_gateway.server.app import create_app

    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        yield c


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    try:
        yield conn
    finally:
        await conn.close()
