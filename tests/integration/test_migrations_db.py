"""The runner against a real Postgres: idempotent, transactional per file, refuses edited files."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from aichat_gateway.migrations.runner import MigrationError, migrate
from tests.support.scratch import ADMIN_DSN, dsn_for


@pytest.fixture
async def empty_db() -> AsyncIterator[asyncpg.Connection]:
    name = f"aichat_mig_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(dsn_for(name))
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


async def test_migrating_twice_applies_everything_once(empty_db: asyncpg.Connection) -> None:
    first = await migrate(empty_db)
    second = await migrate(empty_db)
    assert first and second == []
    assert await empty_db.fetchval("SELECT count(*) FROM schema_migrations") == len(first)


async def test_a_failing_file_leaves_nothing_of_itself_behind(empty_db: asyncpg.Connection, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE kept (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    with pytest.raises(MigrationError, match=r"0002_bad\.sql"):
        await migrate(empty_db, tmp_path)
    assert await empty_db.fetchval("SELECT to_regclass('kept') IS NOT NULL")
    assert await empty_db.fetchval("SELECT to_regclass('half') IS NULL")
    assert await empty_db.fetchval("SELECT max(version) FROM schema_migrations") == 1


async def test_an_edited_applied_file_is_refused(empty_db: asyncpg.Connection, tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE t (id int);")
    await migrate(empty_db, tmp_path)
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE t (id bigint);")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await migrate(empty_db, tmp_path)


async def test_two_concurrent_migrations_apply_each_file_once(empty_db: asyncpg.Connection) -> None:
    dsn_db = await empty_db.fetchval("SELECT current_database()")
    other = await asyncpg.connect(dsn_for(dsn_db))
    try:
        results = await asyncio.gather(migrate(empty_db), migrate(other))
    finally:
        await other.close()
    assert sorted(len(r) for r in results)[0] == 0
    assert await empty_db.fetchval("SELECT count(*) FROM schema_migrations") == max(len(r) for r in results)


async def test_limits_stored_as_json_strings_become_objects(empty_db: asyncpg.Connection, tmp_path: Path) -> None:
    from aichat_gateway.migrations.runner import discover

    first = discover()[0]
    (tmp_path / first.name).write_text(first.sql)
    await migrate(empty_db, tmp_path)  # a database as the first release left it
    user = await empty_db.fetchval("INSERT INTO users (email, password_hash) VALUES ('a@b.example', 'x') RETURNING id")
    await empty_db.execute(
        """INSERT INTO listings (public_id, seller_id, name, provider, base_url, key_ciphertext, key_last4,
               key_fingerprint, price_multiplier, limits, attested_at)
           VALUES ('lst_1', $1, 'n', 'openai', 'https://x.example', 'c', '…abcd', '\\x01', 1,
                   to_jsonb($2::text), now())""",
        user,
        '{"rpm": 60}',
    )
    await migrate(empty_db)
    assert await empty_db.fetchval("SELECT limits->>'rpm' FROM listings") == "60"
