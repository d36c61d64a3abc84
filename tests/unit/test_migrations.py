"""The migration runner's pure decisions: discovery rules and the checksum refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from aichat_gateway.migrations.runner import Migration, MigrationError, check_applied, discover


def write(folder: Path, name: str, sql: str = "SELECT 1;") -> None:
    (folder / name).write_text(sql)


def test_the_packaged_migrations_are_numbered_without_gaps() -> None:
    found = discover()
    assert [m.version for m in found] == list(range(1, len(found) + 1))


def test_migrations_are_discovered_in_version_order(tmp_path: Path) -> None:
    write(tmp_path, "0002_second.sql")
    write(tmp_path, "0001_first.sql")
    assert [m.name for m in discover(tmp_path)] == ["0001_first.sql", "0002_second.sql"]


def test_a_gap_in_versions_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "0001_first.sql")
    write(tmp_path, "0003_third.sql")
    with pytest.raises(MigrationError, match=r"0003_third\.sql"):
        discover(tmp_path)


def test_a_badly_named_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "1_first.sql")
    with pytest.raises(MigrationError, match="NNNN_snake_case"):
        discover(tmp_path)


def test_only_unapplied_migrations_are_pending() -> None:
    first, second = Migration(1, "0001_a.sql", "A"), Migration(2, "0002_b.sql", "B")
    pending = check_applied([first, second], {1: (first.name, first.checksum)})
    assert pending == [second]


def test_an_applied_file_that_was_edited_is_refused() -> None:
    edited = Migration(1, "0001_a.sql", "ALTER TABLE x ADD y int;")
    with pytest.raises(MigrationError, match="edited after it was applied"):
        check_applied([edited], {1: ("0001_a.sql", Migration(1, "0001_a.sql", "original").checksum)})


def test_an_applied_migration_missing_from_the_release_is_refused() -> None:
    with pytest.raises(MigrationError, match="missing from this release"):
        check_applied([], {1: ("0001_a.sql", "abc")})
