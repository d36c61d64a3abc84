"""The settlement worker: the usage stream → usage rows and ledger transfers in Postgres.

Each batch of stream entries becomes one Postgres transaction (rows inserted idempotently on the
request id, one 'usage:<request id>' transfer per new row that cost something). Only after the
commit are the hot balances told (`after_commit`) and the entries acked and deleted, so a crash
anywhere loses nothing: unacked entries are read again by their consumer (id "0") or, if it died,
claimed by another after `claim_idle_ms` (XAUTOCLAIM); replays change nothing in Postgres.

Workers are members of the consumer group "settlers"; run as many as you like (`aichat-gateway
settle`, or inside `serve`). A failing Postgres or Redis is waited out with a bounded backoff.

Rows Postgres refuses for a reason a retry cannot fix go to `<prefix>:usage:dead` with the reason,
beside the entries that failed validation (settleplan.py):
- a charge whose buyer or seller has no `users` row. Ledger accounts belong to users, and a user
  who ever held money cannot be deleted (the FK), so this is an event for a user who never did;
  the request is not silently free, it waits in the dead stream for a person. A request that cost
  nothing is stored whatever its buyer (usage rows carry no FK: they are history).
- a request id already stored for a different request (the same id sent twice by a client).
- a value Postgres rejects (SQLSTATE class 22 or 23): the batch is split in halves until the one
  entry is found, so the rest still settle.

Metrics: `backlog()` is what `gateway_settlement_backlog` reports; whoever runs the worker owns the
Prometheus registry and sets the gauge (the worker keeps no global state).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from aichat_gateway.billing.errors import LedgerError
from aichat_gateway.billing.ledger import AccountKind, Conn, Transfer, account_id, post_many, split_charge
from aichat_gateway.billing.meter import stream_key
from aichat_gateway.billing.settleplan import (
    COLLISION,
    Charge,
    Entry,
    Usage,
    backoff_delay,
    charge_of,
    idempotency_key,
    outcome,
    plan_batch,
    read_entry,
    usage_legs,
)
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)

GROUP: Final = "settlers"
# Dead entries are rare and wait for a person; the cap only stops a flood of garbage filling Redis.
_DEAD_MAXLEN: Final = 1_000_000
# Account ids never change once committed; the cache only saves a query per party per batch.
_ACCOUNT_CACHE_MAX: Final = 100_000
# SQLSTATE classes a retry cannot fix: data exceptions and integrity constraint violations.
_REFUSED_CLASSES: Final = ("22", "23")

AfterCommit = Callable[[Sequence[tuple[str, str]]], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]
_INSERT_SQL: Final = """
INSERT INTO usage_records (request_id, buyer_id, key_id, listing_id, seller_id, model, prompt_tokens,
    completion_tokens, cost_micro, held_micro, fee_micro, outcome, status, stream, created_at, transfer_id,
    settled_at)
SELECT r.*, $17::timestamptz
FROM unnest($1::text[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::int[], $8::int[],
            $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::int[], $14::bool[], $15::timestamptz[],
            $16::bigint[]) AS r
ON CONFLICT (request_id) DO NOTHING
RETURNING request_id
"""
_STORED_SQL: Final = """
SELECT request_id, buyer_id::text, key_id::text, listing_id::text, seller_id::text, model, prompt_tokens,
       completion_tokens, cost_micro, held_micro, outcome, status, stream, created_at
FROM usage_records WHERE request_id = ANY($1::text[])
"""


class SettlementRace(Exception):
    """Another settler stored one of this batch's requests while this one was writing it."""


# Everything a batch can fail with that waiting may fix: the batch is retried as it was.
TRANSIENT: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
    RedisError,
    SettlementRace,
)
# A unique violation is the one class-23 error that a retry fixes: two settlers writing the same
# request at once (a redelivery claimed from a slow consumer); the retry finds it stored.
_RACE_SQLSTATE: Final = "23505"


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
    )


class Settler:
    """One member of the "settlers" consumer group. `run(stop)` is the whole job; `run_once` one batch."""

    def __init__(
        self,
        db: asyncpg.Pool,
        redis: Redis,
        prefix: str,
        fee_rate: Decimal,
        *,
        after_commit: AfterCommit,
        consumer: str,
        batch_size: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        db_timeout: float = 30.0,
    ) -> None:
        split_charge(0, fee_rate)  # refuses a fee rate outside 0..1 now, not at the first charge
        self._db = db
        self._redis = redis
        self._fee_rate = fee_rate
        self._after_commit = after_commit
        self.consumer = consumer
        self.stream = stream_key(prefix)
        self.dead_stream = self.stream + ":dead"
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._clock = clock
        self._sleep = sleep
        self._db_timeout = db_timeout
        self._group_ready = False
        self._claim_cursor = "0-0"
        self._accounts: dict[tuple[AccountKind, str | None], int] = {}

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Settle batches until `stop` is set; failures are logged and retried after a backoff."""
        log.info("settler_started", consumer=self.consumer, stream=self.stream)
        failures = 0
        while not stop.is_set():
            try:
                await self.run_once()
            except TRANSIENT as exc:
                failures += 1
                delay = backoff_delay(failures)
                log.error("settlement_batch_failed", error=repr(exc), failures=failures, retry_in=delay)
                await self._pause(delay, stop)
            else:
                failures = 0
        log.info("settler_stopped", consumer=self.consumer)

    async def _pause(self, delay: float, stop: asyncio.Event) -> None:
        """The injected sleep, cut short by `stop`."""
        nap = asyncio.ensure_future(self._sleep(delay))
        halt = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({nap, halt}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (nap, halt):
                task.cancel()
            await asyncio.gather(nap, halt, return_exceptions=True)

    async def run_once(self) -> int:
        """Settle one batch: this consumer's own unacked entries first, then entries of dead
        consumers, then new ones (waiting up to block_ms). Returns how many entries it handled."""
        await self._ensure_group()
        try:
            read = await self._read()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream was deleted (or Redis lost its data) under us: make the group again.
            self._group_ready = False
            raise
        if not read:
            return 0
        plan = plan_batch([read_entry(_text(entry_id), fields) for entry_id, fields in read])
        rejected = await self._write(plan.usages)
        settled, dead = outcome(plan, rejected)
        for entry, reason in dead:
            request_id = entry.usage.request_id if entry.usage is not None else None
            log.error("usage_entry_dead", entry_id=entry.entry_id, request_id=request_id, reason=reason)
        if settled:
            await self._after_commit(settled)
        await self._finish(plan.entry_ids, dead)
        return len(plan.entry_ids)

    async def backlog(self) -> int:
        """Entries not yet settled: the group's lag plus its pending entries. Settled entries are
        deleted, so that is simply the stream's length (XINFO's lag turns unknown after XDEL)."""
        length: int = await self._redis.xlen(self.stream)
        return length

    # ---- Redis ------------------------------------------------------------------------------

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _read(self) -> list[tuple[Any, Any]]:
        own = await self._redis.xreadgroup(GROUP, self.consumer, {self.stream: "0"}, count=self._batch_size)
        if mine := _entries(own):
            return mine
        cursor, claimed, *_ = await self._redis.xautoclaim(
            self.stream, GROUP, self.consumer, self._claim_idle_ms, self._claim_cursor, count=self._batch_size
        )
        self._claim_cursor = _text(cursor)
        if claimed:
            log.info("usage_entries_claimed", count=len(claimed), consumer=self.consumer)
            return list(claimed)
        fresh = await self._redis.xreadgroup(
            GROUP, self.consumer, {self.stream: ">"}, count=self._batch_size, block=self._block_ms
        )
        return _entries(fresh)

    async def _finish(self, entry_ids: Sequence[str], dead: Sequence[tuple[Entry, str]]) -> None:
        if dead:
            # Its own round trip, not inside the MULTI below: the dead stream is another key (another
            # slot in a Redis Cluster). A crash in between only writes a dead entry twice.
            async with self._redis.pipeline(transaction=False) as pipe:
                for entry, reason in dead:
                    fields: dict[FieldT, EncodableT] = {
                        "id": entry.entry_id,
                        "reason": reason,
                        "e": entry.raw,
                        "consumer": self.consumer,
                    }
                    pipe.xadd(self.dead_stream, fields, maxlen=_DEAD_MAXLEN, approximate=True)
                await pipe.execute()
        # Ack and delete together: acked-but-kept entries would grow the stream forever.
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, GROUP, *entry_ids)
            pipe.xdel(self.stream, *entry_ids)
            await pipe.execute()

    # ---- Postgres ---------------------------------------------------------------------------

    async def _write(self, usages: list[Usage]) -> dict[str, str]:
        """Commit the batch; the request ids set aside, with why. Halves a batch Postgres refuses."""
        if not usages:
            return {}
        try:
            async with asyncio.timeout(self._db_timeout):
                written = await self._transaction(usages)
        except _Refused as refused:
            if len(usages) == 1:
                return {usages[0].request_id: refused.reason}
            half = len(usages) // 2
            return {**await self._write(usages[:half]), **await self._write(usages[half:])}
        if len(self._accounts) > _ACCOUNT_CACHE_MAX:
            self._accounts.clear()
        self._accounts.update(written.accounts)
        return written.rejected

    async def _transaction(self, usages: list[Usage]) -> _Written:
        async with self._db.acquire() as conn:
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
        costed = [u for u in new if u.cost_micro > 0]
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
        costed = [u for u in usages if u.cost_micro > 0]
        known = {owner for (_, owner) in self._accounts}
        wanted = {party for u in costed for party in (u.buyer_id, u.seller_id) if party and party not in known}
        if not wanted:
            return {}
        rows = await conn.fetch("SELECT id::text FROM users WHERE id = ANY($1::uuid[])", list(wanted))
        present = known | {row["id"] for row in rows}
        rejected: dict[str, str] = {}
        for u in costed:
            if u.buyer_id not in present:
                rejected[u.request_id] = "user_id: the buyer has no user row (no ledger account to charge)"
            elif u.seller_id not in present:
                rejected[u.request_id] = "seller_id: the seller has no user row (no ledger account to credit)"
        return rejected

    async def _accounts_for(self, conn: Conn, costed: list[Usage]) -> dict[tuple[AccountKind, str | None], int]:
        wanted: set[tuple[AccountKind, str | None]] = set()
        for u in costed:
            wanted.add((AccountKind.BUYER, u.buyer_id))
            wanted.add((AccountKind.SELLER, u.seller_id))
        if costed:
            wanted.add((AccountKind.PLATFORM, None))
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
                ),
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


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's reply for our one stream (RESP2 shape: [[stream, [(id, fields), ...]]])."""
    return list(reply[0][1]) if reply else []


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
