"""The pure side of buyer holds: key names, windows, script arguments, reply parsing, the refusal rule.

Everything here is plain data in, plain data out, so the unit tests can cover it exhaustively; the
Lua scripts (billing/lua/hold_*.lua) do only the atomic part and `holds.HotBalances` is the thin
Redis shell that glues the two together. See `holds` for the model (what bal, uns and held mean).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from aichat_gateway.billing.errors import LedgerError
from aichat_gateway.redislua import as_int

DAY_MS = 86_400_000
GRACE_MS = 60_000  # spend counters outlive their window a little, so gateway clock skew never loses one
NO_CAP = -1  # a cap argument meaning "no such cap" (caps are never negative)


# ---- what callers see --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyCaps:
    """Spend caps of one gateway API key (micro-USD per UTC day / month); None: no such cap."""

    daily_micro: int | None = None
    monthly_micro: int | None = None


class HoldStatus(StrEnum):
    OK = "ok"
    COLD = "cold"  # the buyer's hot view is not in Redis: `load` it from Postgres, then retry
    SHORT = "short"
    KEY_DAILY_CAP = "key_daily_cap"
    KEY_MONTHLY_CAP = "key_monthly_cap"


@dataclass(frozen=True, slots=True)
class HoldResult:
    status: HoldStatus
    available_micro: int  # spendable after the hold (ok) or now (refused); 0 when cold

    @property
    def ok(self) -> bool:
        return self.status is HoldStatus.OK


@dataclass(frozen=True, slots=True)
class HotView:
    """A buyer's hot view as Redis holds it."""

    balance_micro: int  # the Postgres ledger balance as last applied to Redis
    unsettled_micro: int  # finished requests' charges Postgres has not committed yet
    held_micro: int  # open holds

    @property
    def effective_micro(self) -> int:
        """The balance once every finished request is settled, whether it is yet or not."""
        return self.balance_micro - self.unsettled_micro

    @property
    def available_micro(self) -> int:
        """What a new request may still reserve."""
        return self.effective_micro - self.held_micro


@dataclass(frozen=True, slots=True)
class Repair:
    """What `reconcile` changed in a buyer's hot view (expired holds it dropped are not drift)."""

    buyer_id: str
    before: HotView
    after: HotView
    key_holds_fixed: bool  # the per-key sums of open holds (for key caps) were rebuilt too

    def changes(self) -> dict[str, tuple[int, int]]:
        """Field name -> (old, new), for the fields that changed."""
        return {
            name: (old, new)
            for name in ("balance_micro", "unsettled_micro", "held_micro")
            if (old := getattr(self.before, name)) != (new := getattr(self.after, name))
        }


# ---- keys and windows --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpendWindows:
    """The UTC day and month `now_ms` falls in: ids for key names and their ends (unix ms, exclusive)."""

    day: str  # YYYYMMDD
    month: str  # YYYYMM
    day_end_ms: int
    month_end_ms: int


def spend_windows(now_ms: int) -> SpendWindows:
    return _windows_of_day(now_ms // DAY_MS)


@functools.lru_cache(maxsize=4)
def _windows_of_day(day_index: int) -> SpendWindows:
    """Every hold and settle asks; the answer changes once a day (formatting dates is not free)."""
    date = datetime.fromtimestamp(day_index * DAY_MS / 1000, UTC)
    next_month = datetime(date.year + date.month // 12, date.month % 12 + 1, 1, tzinfo=UTC)
    return SpendWindows(
        day=date.strftime("%Y%m%d"),
        month=date.strftime("%Y%m"),
        day_end_ms=(day_index + 1) * DAY_MS,
        month_end_ms=int(next_month.timestamp()) * 1000,
    )


def buyer_tag(prefix: str, buyer_id: str) -> str:
    """The hash tag every key of one buyer starts with: one slot, so every script runs on Redis Cluster."""
    if "{" in buyer_id or "}" in buyer_id or "{" in prefix or "}" in prefix:
        raise LedgerError("buyer ids and prefixes may not contain braces (they would break the hash tag)")
    return f"{{{prefix}:b:{buyer_id}}}"


def holders_key(prefix: str) -> str:
    """Buyers with (possibly) open holds, scored by their earliest deadline; what `sweep` walks.

    Deliberately not in any buyer's slot: it is written by a plain ZADD beside the hold script,
    never from inside a script."""
    return f"{prefix}:holders"


@dataclass(frozen=True, slots=True)
class BuyerKeys:
    view: str  # hash: bal, uns, held (absent: not loaded, "cold")
    deadlines: str  # zset: request id -> hold deadline (unix ms)
    holds: str  # hash: request id -> "<amount>:<key id>"
    key_holds: str  # hash: key id -> sum of that key's open holds (for key caps)
    unsettled: str  # hash: request id -> charged, until `applied`
    spend_day: str  # hash: key id -> charged this UTC day
    spend_month: str  # hash: key id -> charged this UTC month

    def all(self) -> tuple[str, ...]:
        return (
            self.view,
            self.deadlines,
            self.holds,
            self.key_holds,
            self.unsettled,
            self.spend_day,
            self.spend_month,
        )


def buyer_keys(prefix: str, buyer_id: str, w: SpendWindows) -> BuyerKeys:
    tag = buyer_tag(prefix, buyer_id)
    return BuyerKeys(
        view=view_key(prefix, buyer_id),
        deadlines=f"{tag}:deadlines",
        holds=f"{tag}:holds",
        key_holds=f"{tag}:keyheld",
        unsettled=f"{tag}:unsettled",
        spend_day=f"{tag}:spend:d:{w.day}",
        spend_month=f"{tag}:spend:m:{w.month}",
    )


def view_key(prefix: str, buyer_id: str) -> str:
    return f"{buyer_tag(prefix, buyer_id)}:view"


def _keys(prefix: str, buyer_id: str, now_ms: int) -> BuyerKeys:
    return buyer_keys(prefix, buyer_id, spend_windows(now_ms))


def ttl_ms(ttl_s: float) -> int:
    ms = int(ttl_s * 1000)
    if ms <= 0:
        raise LedgerError("a hold's ttl must be at least a millisecond")
    return ms


def _not_negative(name: str, amount: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise LedgerError(f"{name} must be a non-negative integer of micro-USD")
    return amount


# ---- hold --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldFigures:
    """What hold_take.lua saw before deciding (after dropping expired holds)."""

    balance_micro: int
    unsettled_micro: int
    held_micro: int
    key_day_spend_micro: int
    key_month_spend_micro: int
    key_held_micro: int

    @property
    def available_micro(self) -> int:
        return HotView(self.balance_micro, self.unsettled_micro, self.held_micro).available_micro


def refusal(figures: HoldFigures, amount_micro: int, caps: KeyCaps) -> HoldStatus | None:
    """Why a new hold of `amount_micro` is refused, or None. hold_take.lua applies the same rule.

    Equal is allowed everywhere (spend exactly to zero, exactly to a cap). A short balance is
    reported first: topping up is what the buyer must do whatever the caps say. Of the caps, the
    monthly one first, since it resets last."""
    if amount_micro > figures.available_micro:
        return HoldStatus.SHORT
    key_committed = figures.key_held_micro + amount_micro
    if caps.monthly_micro is not None and figures.key_month_spend_micro + key_committed > caps.monthly_micro:
        return HoldStatus.KEY_MONTHLY_CAP
    if caps.daily_micro is not None and figures.key_day_spend_micro + key_committed > caps.daily_micro:
        return HoldStatus.KEY_DAILY_CAP
    return None


@dataclass(frozen=True, slots=True)
class HoldPlan:
    keys: tuple[str, ...]
    args: tuple[str | int, ...]
    amount_micro: int
    caps: KeyCaps
    deadline_ms: int


def plan_hold(
    prefix: str,
    buyer_id: str,
    request_id: str,
    amount_micro: int,
    key_id: str,
    now_ms: int,
    hold_ms: int,
    caps: KeyCaps | None = None,
) -> HoldPlan:
    """The KEYS and ARGV of hold_take.lua (see its header for their order)."""
    _not_negative("amount_micro", amount_micro)
    caps = caps or KeyCaps()
    for cap in (caps.daily_micro, caps.monthly_micro):
        if cap is not None:
            _not_negative("a key cap", cap)
    k = _keys(prefix, buyer_id, now_ms)
    deadline = now_ms + hold_ms
    args: tuple[str | int, ...] = (
        now_ms,
        deadline,
        request_id,
        amount_micro,
        key_id,
        NO_CAP if caps.daily_micro is None else caps.daily_micro,
        NO_CAP if caps.monthly_micro is None else caps.monthly_micro,
    )
    keys = (k.view, k.deadlines, k.holds, k.key_holds, k.spend_day, k.spend_month)
    return HoldPlan(keys, args, amount_micro, caps, deadline)


HOLD_COLD, HOLD_REFUSED, HOLD_TAKEN, HOLD_ALREADY_OPEN = -1, 0, 1, 2


def parse_hold(raw: Sequence[Any], plan: HoldPlan) -> HoldResult:
    code, *figures = (as_int(x) for x in raw)
    if code == HOLD_COLD:
        return HoldResult(HoldStatus.COLD, 0)
    seen = HoldFigures(*figures)
    decided = refusal(seen, plan.amount_micro, plan.caps)
    if code == HOLD_ALREADY_OPEN:
        return HoldResult(HoldStatus.OK, seen.available_micro)  # reserved by the first call already
    if code == HOLD_TAKEN and decided is None:
        return HoldResult(HoldStatus.OK, seen.available_micro - plan.amount_micro)
    if code == HOLD_REFUSED and decided is not None:
        return HoldResult(decided, seen.available_micro)
    raise RuntimeError(f"hold_take.lua answered {code} where refusal() says {decided}: they disagree")


# ---- settle, renew ------------------------------------------------------------------------------


def plan_settle(
    prefix: str, buyer_id: str, request_id: str, cost_micro: int, now_ms: int, late_cap_micro: int | None = None
) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
    """KEYS and ARGV of hold_settle.lua. The spend lands in the key's windows of the settle, not of
    the hold: a request straddling midnight counts for the day it finished in."""
    _not_negative("cost_micro", cost_micro)
    w = spend_windows(now_ms)
    k = buyer_keys(prefix, buyer_id, w)
    keys = (k.view, k.deadlines, k.holds, k.key_holds, k.unsettled, k.spend_day, k.spend_month)
    late = -1 if late_cap_micro is None else late_cap_micro
    args = (request_id, cost_micro, w.day_end_ms - now_ms + GRACE_MS, w.month_end_ms - now_ms + GRACE_MS, late)
    return keys, args


NOT_OPEN = -1  # settle's answer when the hold was already resolved or expired and swept


def parse_settle(raw: Any) -> int:
    charged = as_int(raw)
    if charged < NOT_OPEN:
        raise RuntimeError(f"hold_settle.lua answered {charged}")
    return charged


def plan_renew(
    prefix: str, buyer_id: str, request_id: str, now_ms: int, hold_ms: int
) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
    """KEYS and ARGV of hold_renew.lua."""
    k = _keys(prefix, buyer_id, now_ms)
    return (k.deadlines,), (request_id, now_ms + hold_ms)


# ---- sweep, load, credit, applied, reconcile ---------------------------------------------------


def plan_sweep(prefix: str, buyer_id: str, now_ms: int) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
    k = _keys(prefix, buyer_id, now_ms)
    return (k.view, k.deadlines, k.holds, k.key_holds), (now_ms,)


@dataclass(frozen=True, slots=True)
class Swept:
    dropped: int  # expired holds voided
    earliest_deadline_ms: int | None  # of the holds still open; None: none left


def parse_sweep(raw: Sequence[Any]) -> Swept:
    dropped, earliest = (as_int(x) for x in raw)
    return Swept(dropped, None if earliest < 0 else earliest)


def plan_load(prefix: str, buyer_id: str, balance_micro: int) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
    k = _keys(prefix, buyer_id, 0)
    return (k.view, k.holds, k.unsettled), (balance_micro,)


def plan_applied(
    prefix: str, buyer_id: str, request_ids: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
    k = _keys(prefix, buyer_id, 0)
    return (k.view, k.unsettled), tuple(request_ids)


def by_buyer(settled: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """(buyer, request) pairs grouped by buyer, each request once, in first-seen order."""
    grouped: dict[str, dict[str, None]] = {}
    for buyer_id, request_id in settled:
        grouped.setdefault(buyer_id, {})[request_id] = None
    return {buyer_id: list(requests) for buyer_id, requests in grouped.items()}


def plan_reconcile(
    prefix: str, buyer_id: str, balance_micro: int, now_ms: int
) -> tuple[tuple[str, ...], tuple[str | int, ...]]:
    k = _keys(prefix, buyer_id, now_ms)
    return (k.view, k.deadlines, k.holds, k.key_holds, k.unsettled), (now_ms, balance_micro)


def parse_reconcile(raw: Sequence[Any], buyer_id: str) -> Repair | None:
    """hold_reconcile.lua's reply: {0} when the view is not loaded, else {1, before x3, after x3, keys fixed}."""
    loaded, *figures = (as_int(x) for x in raw)
    if not loaded:
        return None
    before, after = HotView(*figures[0:3]), HotView(*figures[3:6])
    repair = Repair(buyer_id, before, after, key_holds_fixed=figures[6] == 1)
    return repair if repair.changes() or repair.key_holds_fixed else None


def parse_view(raw: Sequence[Any]) -> HotView | None:
    """HMGET view bal uns held."""
    balance, unsettled, held = raw
    if balance is None:
        return None
    return HotView(as_int(balance), as_int(unsettled or 0), as_int(held or 0))
