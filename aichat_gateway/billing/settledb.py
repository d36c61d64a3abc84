"""The settlement worker's Postgres side: one batch of usages → usage rows and usage transfers.

A batch is one transaction, written so each row is written once: find which requests are already
stored (redeliveries), post one 'usage:<request id>' transfer per new request that cost something
(`ledger.post_many`, which locks every account of the batch in id order), then insert the new
rows with their fee and transfer id (ON CONFLICT DO NOTHING on the request id).

What Postgres refuses for a reason a retry cannot fix comes back as `rejected` (request id →
reason), for the worker to move to the dead stream:
- a charge whose buyer or seller has no `users` row. Ledger accounts belong to users, and a user
  who ever held money cannot be deleted (the FK), so this is an event for a user who never did;
  the request is not silently free, it waits in the dead stream for a person. A request that cost
  nothing is stored whatever its buyer (usage rows carry no FK: they are history).
- a request id already stored for a different request (the same id sent twice by a client).
- a value Postgres rejects (SQLSTATE class 22 or 23, or a LedgerError): the batch is split in
  halves until the one request is found, so the rest still settle.
Anything else (connection lost, timeout, deadlock, a race with another settler) is raised for
the worker to retry the whole batch later.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final

import asyncpg

from aichat_gateway.billing.errors import LedgerError
from aichat_gateway.billing.ledger import AccountKind, Conn, Transfer, account_id, post_many, split_charge
from aichat_gateway.billing.settleplan import (
    COLLISION,
    Charge,
    Usage,
    charge_of,
    idempotency_key,
    is_costed,
    self_dealing,
    usage_legs,
)
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)

# Account ids never change once committed; the cache only saves a query per party per batch.
_ACCOUNT_CACHE_MAX: Final = 100_000
# SQLSTATE classes a retry cannot fix: data exceptions and integrity constraint violations.
_REFUSED_CLASSES: Final = ("22", "23")
# A unique violation is the one class-23 error that a retry fixes: two settlers writing the same
# request at once (a redelivery claimed from a slow consumer); the retry finds it stored.
_RACE_SQLSTATE: Final = "23505"

_INSERT_SQL: Final = """
INSERT INTO usage_records (request_id, buyer_id, key_id, listing_id, seller_id, model, prompt_tokens,
    completion_tokens, cost_micro, held_micro, fee_micro, outcome, status, stream, created_at, transfer_id,
    beyond_hold_micro, settled_at)
SELECT r.*, $18::timestamptz
FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::int[], $8::int[],
            $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::int[], $14::bool[], $15::timestamptz[],
            $16::bigint[], $17::bigint[]) AS r
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id
"""
_STORED_SQL: Final = """
SELECT request_id, buyer_id::text, key_id::text, listing_id::text, seller_id::text, model, prompt_tokens,
       completion_tokens, cost_micro, held_micro, outcome, status, stream, created_at, beyond_hold_micro
FROM usage_records WHERE request_id = ANY($1::text[])
"""


class SettlementRace(Exception):
    """Another settler stored one of this batch's requests while this one was writing it."""


class _Refused(Exception):
    """Postgres or the ledger refused one batch for a reason a retry cannot fix."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class _Written:
    rejected: dict[str, str]  # request id → why it goes to the dead stream
    accounts: dict[tuple[AccountKind, str | None], int]  # accounts seen, safe to cache once committed


def _refusal(exc: BaseException) -> str | None:
    """Why Postgres or the ledger refused, if no retry can change the answer; None if one may."""
    if isinstance(exc, LedgerError):
        return f"ledger refused: {exc.message}"
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == _RACE_SQLSTATE:
        return None
    if isinstance(exc, asyncpg.PostgresError) and isinstance(sqlstate, str) and sqlstate[:2] in _REFUSED_CLASSES:
        return f"postgres refused ({sqlstate}): {exc}"[:500]
    return None


def _stored_usage(row: asyncpg.Record) -> Usage:
    return Usage(
        request_id=row["request_id"],
        buyer_id=row["buyer_id"],
        key_id=row["key_id"],
        listing_id=row["listing_id"],
        seller_id=row["seller_id"],
        model=row["model"],
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        cost_micro=row["cost_micro"],
        held_micro=row["held_micro"],
        outcome=row["outcome"],
        status=row["status"],
        stream=row["stream"],
        created_at=row["created_at"],
        beyond_hold_micro=row["beyond_hold_micro"],
    )


class UsageWriter:
    """Writes batches of validated usages; keeps the ids of ledger accounts it has seen committed."""

    def __init__(
        self,
        db: asyncpg.Pool,
        fee_rate: Decimal,
        *,
        clock: Callable[[], float] = time.time,
        db_timeout: float = 30.0,
    ) -> None:
        split_charge(0, fee_rate)  # refuses a fee rate outside 0..1 now, not at the first charge
        self._db = db
        self._fee_rate = fee_rate
        self._clock = clock  # settled_at
        self._db_timeout = db_timeout
        self._accounts: dict[tuple[AccountKind, str | None], int] = {}
        # Owners of committed accounts: users who cannot be deleted any more (the ledger's FK).
        self._known_users: set[str] = set()

    async def write(self, usages: list[Usage], conn: Conn | None = None) -> dict[str, str]:
        """Commit the batch; the request ids set aside, with why. Halves a batch Postgres refuses.
        On `conn` if given (one the caller holds a lock on), else on a pooled connection."""
        if not usages:
            return {}
        try:
            async with asyncio.timeout(self._db_timeout):
                if conn is not None:
                    written = await self._transaction_on(conn, usages)
                else:
                    async with self._db.acquire() as pooled:
                        written = await self._transaction_on(pooled, usages)
        except _Refused as refused:
            if len(usages) == 1:
                return {usages[0].request_id: refused.reason}
            half = len(usages) // 2
            return {**await self.write(usages[:half], conn), **await self.write(usages[half:], conn)}
        if len(self._accounts) > _ACCOUNT_CACHE_MAX:
            self._accounts.clear()
            self._known_users.clear()
        self._accounts.update(written.accounts)
        self._known_users.update(owner for (_, owner) in written.accounts if owner is not None)
        return written.rejected

    async def _transaction_on(self, conn: Conn, usages: list[Usage]) -> _Written:
        try:
            async with conn.transaction():
                return await self._settle(conn, usages)
        except (asyncpg.PostgresError, LedgerError) as exc:
            reason = _refusal(exc)
            if reason is None:
                raise
            raise _Refused(reason) from exc

    async def _settle(self, conn: Conn, usages: list[Usage]) -> _Written:
        """The batch's writes, in an order that writes each row once: find which requests are new,
        post their transfers, then insert the rows with their transfer ids."""
        rejected = await self._unknown_parties(conn, usages)
        writable = [u for u in usages if u.request_id not in rejected]
        stored = await self._stored(conn, writable)
        by_id = {u.request_id: u for u in writable}
        rejected.update({rid: COLLISION for rid, old in stored.items() if not old.same_request(by_id[rid])})
        new = [u for u in writable if u.request_id not in stored]
        charges = {u.request_id: charge_of(u, self._fee_rate) for u in new}
        costed = [u for u in new if is_costed(u)]
        for u in costed:
            if self_dealing(u):  # the whole cost went to the platform (settleplan.charge_of)
                log.warning(
                    "self_dealing_refused", request_id=u.request_id, buyer_id=u.buyer_id, listing_id=u.listing_id
                )
        accounts = await self._accounts_for(conn, costed)
        transfers = await self._post(conn, costed, charges, accounts)
        inserted = await conn.fetch(
            _INSERT_SQL,
            [u.request_id for u in new],
            [u.buyer_id for u in new],
            [u.key_id for u in new],
            [u.listing_id for u in new],
            [u.seller_id for u in new],
            [u.model for u in new],
            [u.prompt_tokens for u in new],
            [u.completion_tokens for u in new],
            [u.cost_micro for u in new],
            [u.held_micro for u in new],
            [charges[u.request_id].fee_micro for u in new],
            [u.outcome for u in new],
            [u.status for u in new],
            [u.stream for u in new],
            [u.created_at for u in new],
            [transfers.get(u.request_id) for u in new],
            [u.beyond_hold_micro for u in new],
            datetime.fromtimestamp(self._clock(), tz=UTC),
        )
        if set(transfers) - {row["request_id"] for row in inserted}:
            # Stored by another settler since `_stored` looked, and its transfer just posted here:
            # roll back; the retry sees the row.
            raise SettlementRace("a usage row appeared while its transfer was being posted")
        return _Written(rejected, accounts)

    async def _stored(self, conn: Conn, usages: list[Usage]) -> dict[str, Usage]:
        """The batch's requests already in usage_records (redeliveries, or collisions)."""
        rows = await conn.fetch(_STORED_SQL, [u.request_id for u in usages])
        return {row["request_id"]: _stored_usage(row) for row in rows}

    async def _unknown_parties(self, conn: Conn, usages: list[Usage]) -> dict[str, str]:
        """Charges whose buyer or seller has no users row (no ledger account can be made for them)."""
        costed = [u for u in usages if is_costed(u)]
        known = self._known_users
        wanted = {party for u in costed for party in (u.buyer_id, u.seller_id) if party and party not in known}
        if not wanted:
            return {}
        rows = await conn.fetch("SELECT id::text FROM users WHERE id = ANY($1::uuid[])", list(wanted))
        present = {row["id"] for row in rows}
        rejected: dict[str, str] = {}
        for u in costed:
            if u.buyer_id not in known and u.buyer_id not in present:
                rejected[u.request_id] = "user_id: the buyer has no user row (no ledger account to charge)"
            elif u.seller_id not in known and u.seller_id not in present:
                rejected[u.request_id] = "seller_id: the seller has no user row (no ledger account to credit)"
        return rejected

    async def _accounts_for(self, conn: Conn, costed: list[Usage]) -> dict[tuple[AccountKind, str | None], int]:
        wanted: set[tuple[AccountKind, str | None]] = set()
        for u in costed:
            wanted.add((AccountKind.BUYER, u.buyer_id))
            wanted.add((AccountKind.SELLER, u.seller_id))
        if costed:
            wanted.add((AccountKind.PLATFORM, None))
        if any(u.beyond_hold_micro for u in costed):
            wanted.add((AccountKind.PLATFORM_EXPOSURE, None))
        accounts: dict[tuple[AccountKind, str | None], int] = {}
        for kind, owner in sorted(wanted, key=lambda k: (k[0].value, k[1] or "")):
            cached = self._accounts.get((kind, owner))
            accounts[(kind, owner)] = cached if cached is not None else await account_id(conn, kind, owner)
        return accounts

    async def _post(
        self,
        conn: Conn,
        costed: list[Usage],
        charges: dict[str, Charge],
        accounts: dict[tuple[AccountKind, str | None], int],
    ) -> dict[str, int]:
        """One usage transfer per costed request; request id → transfer id."""
        if not costed:
            return {}
        platform = accounts[(AccountKind.PLATFORM, None)]
        exposure = accounts.get((AccountKind.PLATFORM_EXPOSURE, None))
        transfers = [
            Transfer(
                idempotency_key(u.request_id),
                "usage",
                usage_legs(
                    u.cost_micro,
                    charges[u.request_id],
                    buyer=accounts[(AccountKind.BUYER, u.buyer_id)],
                    seller=accounts[(AccountKind.SELLER, u.seller_id)],
                    platform=platform,
                    beyond_hold_micro=u.beyond_hold_micro,
                    exposure=exposure,
                ),
                {"request_id": u.request_id, "model": u.model},  # what a statement line shows
            )
            for u in costed
        ]
        # One call for the batch: it locks every account of the batch at once, in id order, so two
        # settlers never each hold an account the other needs next.
        posted = await post_many(conn, transfers)
        ids: dict[str, int] = {}
        for u, transfer, transfer_id in zip(costed, transfers, posted, strict=True):
            if transfer_id is None:
                # The row is new but its transfer is not: someone posted it by hand, or deleted the
                # row. The first post is the truth; link the row to it.
                transfer_id = await conn.fetchval(
                    "SELECT id FROM transfers WHERE idempotency_key = $1", transfer.idempotency_key
                )
                log.warning("usage_transfer_already_posted", request_id=u.request_id, transfer_id=transfer_id)
            ids[u.request_id] = transfer_id
        return ids
