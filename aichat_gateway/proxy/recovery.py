"""Rebuilding Redis' state from Postgres after Redis lost its data (restarted without persistence).

What Redis holds is of three kinds. Caches and pub/sub (keys, listings, breakers) refill by
themselves. Buyers' hot balances are loaded from the ledger on each buyer's first hold (the hold
answers "cold"). Listings' capacity counters would silently restart at zero, letting a seller's
daily and monthly caps be exceeded; they are rebuilt here from the settled usage rows.

Detection costs nothing on the hot path: a sentinel key, `<prefix>:state`, is written when this
rebuild has run. A cold hold (which a lost Redis makes every buyer's first request after it)
checks the sentinel; if it is gone, Redis lost its data and the rebuild runs once, under a lock,
before that request (or any other cold one) is admitted. Usage events that were in Redis' stream
and not yet settled are gone with it: their requests were served and cannot be billed; the
settlement backlog gauge and the gap in usage rows show the exposure.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
from redis.asyncio import Redis

from aichat_gateway.config.logging import get_logger
from aichat_gateway.marketplace.capacity import Capacity, Usage, windows
from aichat_gateway.marketplace.snapshot import ListingSnapshot

log = get_logger(__name__)

_USED_SQL = """
SELECT listing_id,
       count(*) FILTER (WHERE created_at >= $2) AS minute_requests,
       coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE created_at >= $2), 0) AS minute_tokens,
       coalesce(sum(prompt_tokens + completion_tokens) FILTER (WHERE created_at >= $3), 0) AS day_tokens,
       coalesce(sum(prompt_tokens + completion_tokens), 0) AS month_tokens
FROM usage_records
WHERE listing_id = ANY($1) AND created_at >= $4 AND status = 200
GROUP BY listing_id
"""


def window_starts(now: float) -> tuple[datetime, datetime, datetime]:
    """The current UTC minute, day and month starts, as the capacity counters count them."""
    w = windows(int(now * 1000))
    minute = datetime.fromtimestamp(w.minute * 60, UTC)
    day = datetime.strptime(w.day, "%Y%m%d").replace(tzinfo=UTC)
    month = datetime.strptime(w.month, "%Y%m").replace(tzinfo=UTC)
    return minute, day, month


class Recovery:
    """Watches the `<prefix>:state` sentinel; `rebuild` restores what Postgres can (the capacity
    counters), `on_loss` accounts for this process's usage events the loss took (exposure.py)."""

    def __init__(
        self,
        redis: Redis,
        redis_prefix: str,
        rebuild: Callable[[], Awaitable[int]],
        on_loss: Callable[[], Awaitable[object]],
    ) -> None:
        self._redis = redis
        self._rebuild = rebuild
        self._on_loss = on_loss
        self._lock = asyncio.Lock()
        self.sentinel = f"{redis_prefix}:state"
        self._epoch: bytes | None = None  # the sentinel's value this process last saw

    async def start(self) -> None:
        """At start-up: remember the current epoch (a fresh Redis gets one now)."""
        await self.ensure()

    async def ensure(self) -> None:
        """Rebuild what Postgres can rebuild if Redis has lost its data; cheap when it has not.
        Called on every cold hold and every few seconds, so each process also accounts for the
        usage events it recorded that the loss took with it."""
        redis = self._redis
        epoch: bytes | None = await redis.get(self.sentinel)  # type: ignore[assignment]  # a bytes client
        if epoch is not None and epoch == self._epoch:
            return
        async with self._lock:
            epoch = await redis.get(self.sentinel)  # type: ignore[assignment]
            if epoch is None:
                restored = await self._rebuild()
                epoch = uuid.uuid4().hex.encode()
                if await redis.set(self.sentinel, epoch, nx=True):
                    log.warning("redis_state_rebuilt", listings_with_capacity=restored)
                else:  # another process rebuilt at the same moment: its epoch stands
                    epoch = await redis.get(self.sentinel)  # type: ignore[assignment]
            if self._epoch is not None and epoch != self._epoch:
                await self._on_loss()  # Redis lost its data since we last looked
            self._epoch = epoch


async def restore_capacity(
    db: asyncpg.Pool, listings: ListingSnapshot, capacity: Capacity, clock: Callable[[], float]
) -> int:
    """Rebuild every limited listing's capacity counters from the settled usage rows."""
    limited = [r.listing_id for routes in listings.index.by_model.values() for r in routes if r.limits]
    ids = sorted(set(limited))
    if not ids:
        return 0
    minute, day, month = window_starts(clock())
    rows = await db.fetch(_USED_SQL, [uuid.UUID(i) for i in ids], minute, day, month)
    for row in rows:
        used = Usage(
            rpm=int(row["minute_requests"]),
            tpm=int(row["minute_tokens"]),
            daily_tokens=int(row["day_tokens"]),
            monthly_tokens=int(row["month_tokens"]),
        )
        await capacity.restore(str(row["listing_id"]), used)
    return len(rows)
