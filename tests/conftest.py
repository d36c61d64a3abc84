"""Shared fixtures: a throw-away Postgres database and Redis key prefix per test run.

Tests talk to the real Postgres and Redis on 127.0.0.1 (never mocks). Each run creates its own
database `aichat_test_<random>` and Redis prefix `t<random>` and removes both at the end, so runs
never see each other's state. Data inside a run is isolated by random e-mails and names.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import httpx
import pytest
import redis as redis_sync
from starlette.applications import Starlette

from aichat_gateway.config.settings import Settings, load_settings
from aichat_gateway.migrations.runner import migrate

ADMIN_DSN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
TEST_SECRET = "test-secret-key-" + "x" * 32


def _dsn_for(dbname: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + dbname


async def _create_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(_dsn_for(name))
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def _drop_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    name = f"aichat_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(name))
    try:
        yield _dsn_for(name)
    finally:
        asyncio.run(_drop_database(name))


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"t{secrets.token_hex(6)}"
    yield prefix
    client = redis_sync.Redis.from_url(TEST_REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        keys += list(client.scan_iter(match=f"{{{prefix}}}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def settings(database_url: str, redis_prefix: str) -> Settings:
    return load_settings(
        DATABASE_URL=database_url,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=TEST_SECRET,
        GATEWAY_REDIS_PREFIX=redis_prefix,
        GATEWAY_ALLOW_PRIVATE_UPSTREAMS=True,
        GATEWAY_LOG_JSON=True,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    from aichat_gateway.proxy.app import create_app

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


def unique_email(tag: str = "user") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"
