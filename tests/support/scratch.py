"""Throw-away Postgres databases and Redis key prefixes for one test run, and the settings every test
app shares (the conftests' `settings` fixtures and the proxy suites' gateways)."""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import asyncpg
import redis as redis_sync

from aichat_gateway.embedded import POSTGRES, REDIS, LocalServices, Wanted, local_default, local_services
from aichat_gateway.migrations.runner import migrate


def _local_services() -> LocalServices:
    """The test run's Postgres and Redis: TEST_POSTGRES_ADMIN_DSN / TEST_REDIS_URL when set, else 127.0.0.1's,
    else embedded servers (data in .local/test) stopped when the test process exits (aichat_gateway/embedded.py).

    Decided on import, before any test module reads ADMIN_DSN and TEST_REDIS_URL, and exported so that the
    processes the tests start use the same servers.
    """
    environ = os.environ
    postgres = Wanted(
        POSTGRES,
        "TEST_POSTGRES_ADMIN_DSN",
        environ.get("TEST_POSTGRES_ADMIN_DSN") or None,
        local_default(POSTGRES, "postgresql://postgres@127.0.0.1:5432/postgres", environ),
    )
    redis = Wanted(
        REDIS,
        "TEST_REDIS_URL",
        environ.get("TEST_REDIS_URL") or None,
        local_default(REDIS, "redis://127.0.0.1:6379/0", environ),
    )
    stack = ExitStack()
    data_dir = Path(__file__).resolve().parents[2] / ".local" / "test"
    services = stack.enter_context(local_services(postgres, redis, data_dir, durable=False))
    atexit.register(stack.close)  # after pytest's own teardown (the databases are dropped by then)
    os.environ["TEST_POSTGRES_ADMIN_DSN"] = services.database_url
    os.environ["TEST_REDIS_URL"] = services.redis_url
    return services


LOCAL_SERVICES = _local_services()
ADMIN_DSN = LOCAL_SERVICES.database_url
TEST_REDIS_URL = LOCAL_SERVICES.redis_url
TEST_SECRET = "test-secret-key-" + "x" * 32  # GATEWAY_SECRET_KEY of every test app and gateway


def dsn_for(dbname: str) -> str:
    return ADMIN_DSN.rsplit("/", 1)[0] + "/" + dbname


async def _create_database(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(dsn_for(name))
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


@contextmanager
def migrated_database(tag: str) -> Iterator[str]:
    """A new, migrated database named `aichat_<tag>_<random>`; dropped on exit. Yields its DSN."""
    name = f"aichat_{tag}_{uuid.uuid4().hex[:12]}"
    asyncio.run(_create_database(name))
    try:
        yield dsn_for(name)
    finally:
        asyncio.run(_drop_database(name))


@contextmanager
def redis_prefix(tag: str) -> Iterator[str]:
    """A fresh Redis key prefix; every key under it (plain or hash-tagged) is deleted on exit."""
    prefix = f"{tag}{secrets.token_hex(6)}"
    try:
        yield prefix
    finally:
        client = redis_sync.Redis.from_url(TEST_REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            keys += list(client.scan_iter(match=f"{{{prefix}}}*", count=1000))
            keys += list(client.scan_iter(match=f"{{{prefix}:*", count=1000))  # {prefix:l:<id>}:... hash tags
            if keys:
                client.delete(*keys)
        finally:
            client.close()
