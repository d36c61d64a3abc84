"""The reconciler: compares each buyer's hot view in Redis with Postgres and repairs drift.

Postgres is the truth; Redis' `bal` is meant to equal the buyer's ledger balance. Every writer of a
buyer balance commits to Postgres first and then tells Redis (settlement: `applied`; credits and
Stripe: `credit`). Between those two steps the two disagree for a moment, legitimately. So
writers hold a shared advisory lock across "commit, then tell Redis" (`balance_writes`), and the
reconciler takes the same lock exclusively: while it holds it, no writer is between the two
steps, and any difference it sees is real drift (a process that died between them, a credit that
raced a cold load, a hand-edited key). Each repair is logged with the values before and after
and counted, so an operator sees exactly what was changed.

Lock cost: the shared lock is one statement on a pooled connection per settlement batch or
credit; the reconciler holds the exclusive one for one chunk of buyers at a time (one query plus
one Lua call per buyer), every `GATEWAY_RECONCILE_INTERVAL` seconds.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Final

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from redis.asyncio import Redis

from aichat_gateway.billing.holds import HotBalances, Repair
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)

# One advisory lock id for "buyer balances in Postgres and Redis" (ASCII "AGWB").
BALANCE_LOCK: Final = 0x41475742
CHUNK: Final = 200


@contextlib.asynccontextmanager
async def balance_writes(db: asyncpg.Pool) -> AsyncIterator[PoolConnectionProxy[asyncpg.Record]]:
    """Hold while committing a buyer-balance change to Postgres and then applying it to Redis.
    Yields the connection holding the lock: commit on it, so a writer needs one connection, not two
    (a second one from a small pool could wait for ever)."""
    async with db.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock_shared($1)", BALANCE_LOCK)
        try:
            yield conn
        finally:
            await conn.execute("SELECT pg_advisory_unlock_shared($1)", BALANCE_LOCK)


def buyer_of_view_key(prefix: str, key: str) -> str | None:
    """`{<prefix>:b:<buyer id>}:view` → the buyer id (None for anything else)."""
    head, tail = "{" + prefix + ":b:", "}:view"
    if key.startswith(head) and key.endswith(tail):
        buyer = key[len(head) : -len(tail)]
        return buyer or None
    return None


class Reconciler:
    def __init__(self, db: asyncpg.Pool, redis: Redis, prefix: str, hot: HotBalances) -> None:
        self._db = db
        self._redis = redis
        self._prefix = prefix
        self._hot = hot

    async def buyers(self) -> list[str]:
        """Buyers with a hot view in Redis (SCAN: never blocks Redis)."""
        found: list[str] = []
        pattern = "{" + self._prefix + ":b:*}:view"
        async for raw in self._redis.scan_iter(match=pattern, count=1000):
            key = raw.decode() if isinstance(raw, bytes) else str(raw)
            buyer = buyer_of_view_key(self._prefix, key)
            if buyer is not None:
                found.append(buyer)
        return found

    async def run_once(self) -> list[Repair]:
        """Reconcile every loaded buyer; returns the repairs made."""
        buyers = await self.buyers()
        repairs: list[Repair] = []
        for start in range(0, len(buyers), CHUNK):
            repairs.extend(await self._chunk(buyers[start : start + CHUNK]))
        return repairs

    async def _chunk(self, buyers: Sequence[str]) -> list[Repair]:
        ids = [_uuid(b) for b in buyers]
        known = [b for b, i in zip(buyers, ids, strict=True) if i is not None]
        repairs: list[Repair] = []
        async with self._db.acquire() as conn:
            # Waits for writers between "commit" and "tell Redis" to finish; new writers queue behind.
            await conn.execute("SELECT pg_advisory_lock($1)", BALANCE_LOCK)
            try:
                rows = await conn.fetch(
                    "SELECT owner_id, balance_micro FROM ledger_accounts WHERE kind = 'buyer' AND owner_id = ANY($1)",
                    [i for i in ids if i is not None],
                )
                balances = {str(r["owner_id"]): int(r["balance_micro"]) for r in rows}
                for buyer in known:
                    repair = await self._hot.reconcile(buyer, balances.get(buyer, 0))
                    if repair is not None:
                        repairs.append(repair)
                        log.warning(
                            "hot_balance_repaired",
                            buyer_id=buyer,
                            changes={name: list(pair) for name, pair in repair.changes().items()},
                        )
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", BALANCE_LOCK)
        return repairs


def _uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text)
    except ValueError:
        return None
