"""The settlement worker: the usage stream → usage rows and ledger transfers in Postgres.

Each batch of stream entries becomes one Postgres transaction (rows inserted idempotently on the
request id, one 'usage:<request id>' transfer per new row that cost something). Only after the
commit are the hot balances told (`after_commit`) and the entries acked, so a crash
anywhere loses nothing: unacked entries are read again by their consumer (id "0") or, if it died,
claimed by another after `claim_idle_ms` (XAUTOCLAIM); replays change nothing in Postgres.

Workers are members of the consumer group "settlers"; run as many as you like (`aichat-gateway
settle`, or inside `serve`). A failing Postgres or Redis is waited out with a bounded backoff.

Entries that fail validation (settleplan.py) and requests Postgres refuses for good (settledb.py)
go to `<prefix>:usage:dead` with the reason, are logged at error level, and are acked: one bad
entry never holds up the stream.

Settled entries stay in the stream for `retain_ms` (ten minutes by default: `XRANGE` shows an
operator, or a test, what was recorded), then the worker trims them, never past the group's oldest
unacknowledged entry nor its last delivered one, so nothing unsettled is ever trimmed.

Metrics: `backlog()` is what `gateway_settlement_backlog` reports; whoever runs the worker owns the
Prometheus registry and sets the gauge (the worker keeps no global state).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any, Final

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from aichat_gateway.billing.meter import stream_key
from aichat_gateway.billing.reconcile import balance_writes
from aichat_gateway.billing.settledb import SettlementRace, UsageWriter
from aichat_gateway.billing.settleplan import Entry, backoff_delay, outcome, plan_batch, read_entry
from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)

GROUP: Final = "settlers"
# Dead entries are rare and wait for a person; the cap only stops a flood of garbage filling Redis.
_DEAD_MAXLEN: Final = 1_000_000

AfterCommit = Callable[[Sequence[tuple[str, str]]], Awaitable[None]]
Sleep = Callable[[float], Awaitable[None]]
# Everything a batch can fail with that waiting may fix: the batch is retried as it was.
TRANSIENT: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
    RedisError,
    SettlementRace,
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
        retain_ms: int = 600_000,
        trim_every: float = 30.0,
        linger: float = 0.0,
    ) -> None:
        self._linger = linger
        self._clock = clock
        self._retain_ms = retain_ms
        self._trim_every = trim_every
        self._trimmed_at = float("-inf")
        self._db = db
        self._writer = UsageWriter(db, fee_rate, clock=clock, db_timeout=db_timeout)
        self._redis = redis
        self._after_commit = after_commit
        self.consumer = consumer
        self.stream = stream_key(prefix)
        self.dead_stream = self.stream + ":dead"
        self._batch_size = batch_size
        self._block_ms = block_ms
        self._claim_idle_ms = claim_idle_ms
        self._sleep = sleep
        self._group_ready = False
        self._claim_cursor = "0-0"

    # ---- the loop ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Settle batches until `stop` is set; failures are logged and retried after a backoff."""
        log.info("settler_started", consumer=self.consumer, stream=self.stream)
        failures = 0
        while not stop.is_set():
            try:
                handled = await self.run_once()
            except TRANSIENT as exc:
                failures += 1
                delay = backoff_delay(failures)
                log.error("settlement_batch_failed", error=repr(exc), failures=failures, retry_in=delay)
                await self._pause(delay, stop)
            else:
                failures = 0
                if 0 < handled < self._batch_size and self._linger > 0:
                    # A partial batch: let the next one fill up. Fewer, larger transactions cost
                    # far less CPU (Postgres' and ours) than one per handful of requests.
                    await self._pause(self._linger, stop)
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
        async with balance_writes(self._db) as conn:  # the reconciler never sees a commit Redis has not heard of
            rejected = await self._writer.write(plan.usages, conn)
            settled, dead = outcome(plan, rejected)
            for entry, reason in dead:
                request_id = entry.usage.request_id if entry.usage is not None else None
                log.error("usage_entry_dead", entry_id=entry.entry_id, request_id=request_id, reason=reason)
            if settled:
                await self._after_commit(settled)
        await self._finish(plan.entry_ids, dead)
        return len(plan.entry_ids)

    async def backlog(self) -> int:
        """Entries not yet settled: the group's lag (never delivered) plus its pending entries."""
        try:
            groups = await self._redis.xinfo_groups(self.stream)
        except ResponseError:
            return 0  # no stream yet: nothing was ever recorded
        group = _group(groups)
        if group is None:
            length: int = await self._redis.xlen(self.stream)
            return length
        lag = group.get("lag")
        if lag is None:  # Redis cannot tell (entries deleted past the group's position)
            lag = await self._redis.xlen(self.stream)
        return int(lag) + int(group.get("pending") or 0)

    async def _trim(self) -> None:
        """Drop settled entries older than the retention window (at most every `trim_every` s)."""
        now = self._clock()
        if now - self._trimmed_at < self._trim_every:
            return
        self._trimmed_at = now
        group = _group(await self._redis.xinfo_groups(self.stream))
        if group is None:
            return
        bounds = [f"{int(now * 1000) - self._retain_ms}-0", _text(group["last-delivered-id"])]
        summary = await self._redis.xpending(self.stream, GROUP)
        if int(summary["pending"]):
            bounds.append(_text(summary["min"]))
        await self._redis.xtrim(self.stream, minid=min(bounds, key=_stream_id), approximate=False)

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
        await self._redis.xack(self.stream, GROUP, *entry_ids)
        await self._trim()


def _entries(reply: Any) -> list[tuple[Any, Any]]:
    """XREADGROUP's reply for our one stream (RESP2 shape: [[stream, [(id, fields), ...]]])."""
    return list(reply[0][1]) if reply else []


def _group(groups: Sequence[dict[Any, Any]]) -> dict[str, Any] | None:
    for group in groups:
        if _text(group["name"]) == GROUP:
            return group
    return None


def _stream_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
