"""Throw-away Postgres databases and Redis key prefixes for one test run, and the settings every test
app shares (the conftests' `settings` fixtures and the proxy suites' gateways)."""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import redis as redis_sync

from aichat_gateway.migrations.runner import migrate

ADMIN_DSN = os.environ.get("TEST_POSTGRES_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
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
