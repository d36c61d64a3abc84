"""The ledger audit's runs, kept (migration 0014's audit_runs) so the admin console shows the last one.

`run` checks the invariants (audit.py) and counts the ledger in one snapshot, then stores what it
found: by an admin from the dashboard or `POST /api/admin/audit-runs`, or by `aichat-gateway audit`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from aichat_gateway.billing.audit import audit, ledger_size
from aichat_gateway.billing.ledger import Conn


@dataclass(frozen=True, slots=True)
class AuditRun:
    id: int
    ran_at: datetime
    ok: bool
    findings: tuple[str, ...]
    accounts: int
    transfers: int
    ran_by_email: str | None

    def public(self) -> dict[str, object]:
        return {
            "id": str(self.id),
            "ran_at": self.ran_at.isoformat(),
            "ok": self.ok,
            "findings": list(self.findings),
            "accounts": self.accounts,
            "transfers": self.transfers,
            "ran_by_email": self.ran_by_email,
        }


async def check(conn: Conn) -> tuple[list[str], int, int]:
    """(breaches, accounts, transfers) from one read-only snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        breaches = await audit(conn)
        accounts, transfers = await ledger_size(conn)
    return [str(b) for b in breaches], accounts, transfers


async def record(conn: Conn, findings: list[str], accounts: int, transfers: int, ran_by: str | None) -> None:
    # As text, cast in SQL: the app's pool has a jsonb codec that would store the string as a JSON string.
    await conn.execute(
        """INSERT INTO audit_runs (ok, findings, accounts, transfers, ran_by)
           VALUES ($1, $2::text::jsonb, $3, $4, $5)""",
        not findings,
        orjson.dumps(findings).decode(),
        accounts,
        transfers,
        uuid.UUID(ran_by) if ran_by else None,
    )


async def run(db: asyncpg.Pool, ran_by: str | None) -> AuditRun:
    """Audit the ledger now and keep the result; the run as stored."""
    async with db.acquire() as conn:
        findings, accounts, transfers = await check(conn)
        await record(conn, findings, accounts, transfers, ran_by)
    found = await last(db)
    assert found is not None, "just stored"
    return found


async def last(db: asyncpg.Pool) -> AuditRun | None:
    row = await db.fetchrow(
        """SELECT r.id, r.ran_at, r.ok, r.findings::text AS findings, r.accounts, r.transfers, u.email
           FROM audit_runs r LEFT JOIN users u ON u.id = r.ran_by
           ORDER BY r.id DESC LIMIT 1"""
    )
    if row is None:
        return None
    return AuditRun(
        id=row["id"],
        ran_at=row["ran_at"],
        ok=row["ok"],
        findings=tuple(orjson.loads(row["findings"])),
        accounts=row["accounts"],
        transfers=row["transfers"],
        ran_by_email=row["email"],
    )
