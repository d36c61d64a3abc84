"""Buyer holds and hot balances in Redis: /v1 requests are admitted with zero Postgres queries.

Postgres (the ledger) is the truth; Redis keeps each buyer's hot view, three integers of micro-USD:

- `bal`, the Postgres balance as last applied here (negative after a refund or a dispute),
- `uns`, charges of finished requests the settlement worker has not committed yet,
- `held`, open holds: the worst-case cost reserved before each upstream call,

and a new request may reserve at most `bal - uns - held`. Why holds: the cost is only known after
the answer, and two concurrent requests must not both spend the last dollar; the hold reserves the
worst case atomically (one Lua script), the settle turns it into the real cost, at most once and
never above what was held. Why `uns` apart from `bal`: when the worker commits a charge to
Postgres, `applied` moves it from one to the other, so `bal` keeps meaning "Postgres' balance" and
`reconcile` can compare the two directly.

Per-request records make every step idempotent and repairable: open holds (amount, key, deadline)
and unsettled charges are remembered by request id, so a repeated hold reserves once, a repeated
settle charges once, a re-delivered `applied` moves nothing twice, and `reconcile` can recompute
`uns` and `held` from them. Request ids must be unique per request (the settlement worker is
idempotent on them too): a hold under the id of a request already resolved is a new hold, and its
charge adds to the first one's record.

All keys of one buyer share one hash slot, `{<prefix>:b:<buyer id>}:...`, and every script touches
only its declared KEYS, so the scripts run unchanged on Redis Cluster. Redis must not evict these
keys (maxmemory-policy noeviction): they carry no TTL on purpose.

Crashed processes never settle. Each hold has a deadline (now + ttl, renewable for long streams);
`hold_in` drops the buyer's expired holds before deciding, and `sweep` does it for buyers who send
nothing more, found through `<prefix>:holders` (buyers scored by their earliest deadline). A hold
that expired but was not swept yet still settles; a swept one answers -1 and charges nothing, so
the ttl must outlast the request unless the caller renews.

Per-key spend caps count, within the UTC day and month, what the key's requests were charged
(in the window of the settle) plus the key's open holds.

A lost view (new buyer, or Redis lost its data) answers COLD: the caller reads the Postgres
balance, calls `load` and retries. Races the reconciler repairs: a credit committed between that
read and `load` is missed (the buyer sees less, never more); after Redis lost its data, charges
that were unsettled then are unknown here until Postgres commits them (and `reconcile` runs).

Clocks: `now` comes from the injected clock and is passed to Lua, so tests never sleep. The hot
path has two Redis round trips (hold, settle): `hold_in`, `settle_in`, `void_in` and `renew_in`
queue their script on the caller's pipeline and return a `Pending` (see `redislua.LuaScript`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from aichat_gateway.billing.holdplan import (
    NOT_OPEN,
    HoldResult,
    HoldStatus,
    HotView,
    KeyCaps,
    Repair,
    by_buyer,
    holders_key,
    parse_hold,
    parse_reconcile,
    parse_settle,
    parse_sweep,
    parse_view,
    plan_applied,
    plan_hold,
    plan_load,
    plan_reconcile,
    plan_renew,
    plan_settle,
    plan_sweep,
    ttl_ms,
    view_key,
)
from aichat_gateway.redislua import LuaScript, Pending, Queue, as_int, run_one

__all__ = ["HoldResult", "HoldStatus", "HotBalances", "HotView", "KeyCaps", "Repair"]

_PACKAGE = "aichat_gateway.billing"


def _is_one(raw: Any) -> bool:
    return as_int(raw) == 1


def _text(raw: Any) -> str:
    """A zset member as str, whether the client decodes responses or not."""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class HotBalances:
    """Every buyer's hot view, shared by all gateway processes through Redis."""

    def __init__(self, redis: Redis, prefix: str, *, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._prefix = prefix
        self._clock = clock
        self._holders = holders_key(prefix)
        self._take = LuaScript(redis, _PACKAGE, "hold_take")
        self._settle = LuaScript(redis, _PACKAGE, "hold_settle")
        self._renew = LuaScript(redis, _PACKAGE, "hold_renew")
        self._sweep = LuaScript(redis, _PACKAGE, "hold_sweep")
        self._load = LuaScript(redis, _PACKAGE, "hold_load")
        self._credit = LuaScript(redis, _PACKAGE, "hold_credit")
        self._applied = LuaScript(redis, _PACKAGE, "hold_applied")
        self._reconcile = LuaScript(redis, _PACKAGE, "hold_reconcile")

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)  # not int(): 1717200000.001 s must not truncate to ...000 ms

    # ---- the hot path: queued on the caller's pipeline ------------------------------------------

    def hold_in(
        self,
        pipe: Queue,
        *,
        buyer_id: str,
        request_id: str,
        amount_micro: int,
        key_id: str,
        ttl_s: float,
        caps: KeyCaps | None = None,
    ) -> Pending[HoldResult]:
        """Queue: reserve `amount_micro` until now + ttl_s. Repeating a request id reserves once.

        Also queues a plain ZADD on `<prefix>:holders` (same round trip; LT keeps the earliest
        deadline), so `sweep` finds this buyer if the hold is never resolved."""
        plan = plan_hold(self._prefix, buyer_id, request_id, amount_micro, key_id, self._now_ms(), ttl_ms(ttl_s), caps)
        held = self._take.queue(pipe, plan.keys, plan.args, lambda raw: parse_hold(raw, plan))
        index = len(pipe)
        pipe.execute_command("ZADD", self._holders, "LT", plan.deadline_ms, buyer_id)

        async def resolve(results: Sequence[Any]) -> HoldResult:
            result = await held.resolve(results)
            if isinstance(results[index], BaseException):
                raise results[index]
            return result

        return Pending(resolve)

    def settle_in(
        self, pipe: Queue, *, buyer_id: str, request_id: str, cost_micro: int, late_cap_micro: int | None = None
    ) -> Pending[int]:
        """Queue: resolve the hold, charging min(cost, held). Returns the charge, -1 if not open.
        With `late_cap_micro` (what the request held) a hold already swept is charged anyway, as
        an unsettled charge, once: the request was served and its usage event bills it."""
        keys, args = plan_settle(self._prefix, buyer_id, request_id, cost_micro, self._now_ms(), late_cap_micro)
        return self._settle.queue(pipe, keys, args, parse_settle)

    def void_in(self, pipe: Queue, *, buyer_id: str, request_id: str) -> Pending[bool]:
        """Queue: release the hold without charging (the request failed or never went out)."""
        settled = self.settle_in(pipe, buyer_id=buyer_id, request_id=request_id, cost_micro=0)
        return settled.map(lambda charged: charged != NOT_OPEN)

    def renew_in(self, pipe: Queue, *, buyer_id: str, request_id: str, ttl_s: float) -> Pending[bool]:
        """Queue: push an open hold's deadline to now + ttl_s (never earlier). False if not open."""
        keys, args = plan_renew(self._prefix, buyer_id, request_id, self._now_ms(), ttl_ms(ttl_s))
        return self._renew.queue(pipe, keys, args, _is_one)

    async def hold(
        self,
        *,
        buyer_id: str,
        request_id: str,
        amount_micro: int,
        key_id: str,
        ttl_s: float,
        caps: KeyCaps | None = None,
    ) -> HoldResult:
        return await run_one(
            self._redis,
            lambda p: self.hold_in(
                p,
                buyer_id=buyer_id,
                request_id=request_id,
                amount_micro=amount_micro,
                key_id=key_id,
                ttl_s=ttl_s,
                caps=caps,
            ),
        )

    async def settle(self, *, buyer_id: str, request_id: str, cost_micro: int) -> int:
        return await run_one(
            self._redis, lambda p: self.settle_in(p, buyer_id=buyer_id, request_id=request_id, cost_micro=cost_micro)
        )

    async def void(self, *, buyer_id: str, request_id: str) -> bool:
        return await run_one(self._redis, lambda p: self.void_in(p, buyer_id=buyer_id, request_id=request_id))

    async def renew(self, *, buyer_id: str, request_id: str, ttl_s: float) -> bool:
        return await run_one(
            self._redis, lambda p: self.renew_in(p, buyer_id=buyer_id, request_id=request_id, ttl_s=ttl_s)
        )

    # ---- the money side: Postgres changes, applied here ----------------------------------------

    async def load(self, buyer_id: str, balance_micro: int) -> None:
        """Create the hot view from the Postgres balance after a COLD; no-op if it exists."""
        keys, args = plan_load(self._prefix, buyer_id, balance_micro)
        await run_one(self._redis, lambda p: self._load.queue(p, keys, args, _is_one))

    async def credit(self, buyer_id: str, amount_micro: int) -> None:
        """After a Postgres credit (or debit: negative) committed: bal += amount, if loaded."""
        keys = (view_key(self._prefix, buyer_id),)
        await run_one(self._redis, lambda p: self._credit.queue(p, keys, (amount_micro,), _is_one))

    async def applied(self, settled: Sequence[tuple[str, str]]) -> None:
        """The settlement worker committed these (buyer, request) charges: move them from uns into
        bal, once. One script per buyer, all in one pipeline."""
        grouped = by_buyer(settled)
        if not grouped:
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            pending = []
            for buyer_id, request_ids in grouped.items():
                keys, args = plan_applied(self._prefix, buyer_id, request_ids)
                pending.append(self._applied.queue(pipe, keys, args, as_int))
            results = await pipe.execute(raise_on_error=False)
        for each in pending:
            await each.resolve(results)

    async def view(self, buyer_id: str) -> HotView | None:
        """The stored view (expired holds still count until something sweeps them); None if cold."""
        return parse_view(await self._redis.hmget(view_key(self._prefix, buyer_id), ["bal", "uns", "held"]))

    async def reconcile(self, buyer_id: str, postgres_balance_micro: int) -> Repair | None:
        """Set bal to Postgres' balance and rebuild uns and held from the per-request records.

        Returns what drifted, None if nothing did (or the view is not loaded: nothing to repair).
        The caller must hold off settlement commits for this buyer meanwhile (an advisory lock):
        a commit between reading the balance and this call would count its charge twice."""
        keys, args = plan_reconcile(self._prefix, buyer_id, postgres_balance_micro, self._now_ms())
        raw = await run_one(self._redis, lambda p: self._reconcile.queue(p, keys, args, list))
        return parse_reconcile(raw, buyer_id)

    async def sweep(self, limit: int = 1000) -> int:
        """Void expired holds of buyers who make no new request; returns the holds voided.

        Each due buyer is taken off `<prefix>:holders` before its sweep script runs and put back
        (LT: at its earliest open deadline) after, so a hold made meanwhile is never lost: either
        the script sees it or its own ZADD comes after the removal."""
        now = self._now_ms()
        due = [_text(b) for b in await self._redis.zrangebyscore(self._holders, "-inf", f"({now}", start=0, num=limit)]
        if not due:
            return 0
        async with self._redis.pipeline(transaction=False) as pipe:
            swept = []
            for buyer_id in due:
                pipe.zrem(self._holders, buyer_id)
                keys, args = plan_sweep(self._prefix, buyer_id, now)
                swept.append(self._sweep.queue(pipe, keys, args, parse_sweep))
            results = await pipe.execute(raise_on_error=False)
        for removed in results[0::2]:  # the ZREMs; the scripts' errors surface in resolve()
            if isinstance(removed, BaseException):
                raise removed
        outcomes = [await each.resolve(results) for each in swept]
        still_open = {
            buyer_id: outcome.earliest_deadline_ms
            for buyer_id, outcome in zip(due, outcomes, strict=True)
            if outcome.earliest_deadline_ms is not None
        }
        if still_open:
            await self._redis.zadd(self._holders, still_open, lt=True)
        return sum(outcome.dropped for outcome in outcomes)
