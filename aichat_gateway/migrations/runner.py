"""Apply the numbered SQL files of this folder, in order, once each.

Rules: one transaction per file; a Postgres advisory lock so two processes never migrate at once;
the checksum of every applied file is stored and an edited applied file is refused (add a new file
instead). Running it again applies nothing and succeeds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import asyncpg

_FILE_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# An arbitrary constant shared by every gateway process: the advisory lock's identity.
_LOCK_ID = 7_420_117_001


class MigrationError(RuntimeError):
    """A migration could not be applied; the message names the file."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(folder: Path | None = None) -> list[Migration]:
    """The migrations in version order; refuses gaps, duplicates and badly named files."""
    root = folder if folder is not None else Path(str(resources.files(__package__ or "")))
    found: list[Migration] = []
    for path in sorted(root.glob("*.sql")):
        match = _FILE_NAME.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_snake_case.sql")
        found.append(Migration(int(match.group(1)), path.name, path.read_text()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"{migration.name}: expected version {expected:04d} (no gaps, no duplicates)")
    return found


def check_applied(available: list[Migration], applied: dict[int, tuple[str, str]]) -> list[Migration]:
    """Pure decision: which migrations to apply, refusing any applied file that was edited or removed."""
    by_version = {m.version: m for m in available}
    for version, (name, checksum) in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(f"{name} is applied in the database but missing from this release")
        if migration.checksum != checksum:
            raise MigrationError(
                f"{migration.name} was edited after it was applied (checksum differs); add a new migration file instead"
            )
    return [m for m in available if m.version not in applied]


async def migrate(conn: asyncpg.Connection, folder: Path | None = None) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    available = discover(folder)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        pending = check_applied(available, {r["version"]: (r["name"], r["checksum"]) for r in rows})
        for migration in pending:
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.PostgresError as exc:
                raise MigrationError(f"{migration.name} failed: {exc}") from exc
        return [m.name for m in pending]
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
