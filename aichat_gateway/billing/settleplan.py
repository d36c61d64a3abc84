"""Settlement decisions, pure: stream entries → usage rows, ledger legs, and the entries to set aside.

The settlement worker (`settle.py`) does the I/O around these functions. Everything that can be
decided from the entries alone is decided here, so it is unit-tested without Postgres or Redis:

- `read_entry` validates one stream entry. A malformed entry ("poison") is never retried: retrying
  cannot fix it, and a batch that fails on it forever would stop every charge behind it. It goes
  to the dead stream with the reason instead.
- `plan_batch` keeps the first event of each request id (a request is charged once, however many
  times its event was delivered); `outcome` says, after the commit, which (buyer, request) pairs
  to tell the hot balances and which entries go to the dead stream.
- `usage_legs` is the sign convention of a usage charge: buyer -C, seller +S, platform +F; a
  request that cost X beyond its hold adds platform_exposure -X, and S + F = C + X.
- `charge_of` splits a cost; a request whose seller is its own buyer (`self_dealing`) earns the
  seller nothing: the whole cost goes to the platform. The router never routes a buyer to their
  own listing; this is the defence behind it, so no path can turn promotional credit into payable
  earnings (DESIGN.md: a request never earns money for the account that pays it).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Final

import orjson

from aichat_gateway.billing.ledger import split_charge
from aichat_gateway.billing.meter import EVENT_FIELD

# The gateway's own ids and the ones it accepts from clients (proxy/edge.py), with room to spare.
_REQUEST_ID: Final = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
_CANONICAL_UUID: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_OUTCOME: Final = re.compile(r"^[a-z_]{1,64}$")
_DIGITS: Final = re.compile(r"^[0-9]{1,19}$")
_INT4_MAX: Final = 2**31 - 1
_BIGINT_MAX: Final = 2**63 - 1
# A model name is the buyer's own text on requests that reached no listing; it is only shown back.
MODEL_MAX_CHARS: Final = 200
# Any ts_ms outside 2000-01-01 .. 2200-01-01 is a broken clock or a broken event.
_TS_MIN_MS: Final = 946_684_800_000
_TS_MAX_MS: Final = 7_258_118_400_000


class Poison(ValueError):
    """An entry no retry can settle; `reason` says why (it is stored beside it in the dead stream)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Usage:
    """One request's usage event, validated, as its usage_records row."""

    request_id: str
    buyer_id: str
    key_id: str | None
    listing_id: str | None
    seller_id: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_micro: int
    held_micro: int
    outcome: str
    status: int
    stream: bool
    created_at: datetime
    # What the provider billed beyond the hold: the seller's, at the platform's cost.
    beyond_hold_micro: int = 0

    def same_request(self, other: Usage) -> bool:
        """True when `other` is this event delivered again, not another request under the same id."""
        return self == other


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: its id, the raw event (kept for the dead stream) and what it decoded to."""

    entry_id: str
    raw: bytes
    usage: Usage | None = None
    reason: str | None = None  # set exactly when usage is None


@dataclass(frozen=True, slots=True)
class Charge:
    """A usage row's share-out: what the seller earns and the platform keeps (they sum to the cost,
    beyond-hold part included)."""

    seller_micro: int
    fee_micro: int


@dataclass(slots=True)
class BatchPlan:
    """What one batch of entries comes to before Postgres is asked anything."""

    usages: list[Usage] = field(default_factory=list)  # one per request id, first delivery wins
    accepted: list[Entry] = field(default_factory=list)  # every valid entry, redeliveries included
    dead: list[tuple[Entry, str]] = field(default_factory=list)  # (entry, reason)
    entry_ids: list[str] = field(default_factory=list)  # every entry read: all are acked at the end


def read_entry(entry_id: str, fields: Mapping[bytes, bytes] | None) -> Entry:
    """Decode and validate one stream entry; an invalid one comes back with its reason."""
    raw = (fields or {}).get(EVENT_FIELD.encode(), b"")
    try:
        return Entry(entry_id, raw, usage=parse_event(_decode(fields)))
    except Poison as poison:
        return Entry(entry_id, raw, reason=poison.reason)


def _decode(fields: Mapping[bytes, bytes] | None) -> Mapping[str, object]:
    if not fields:
        # XREADGROUP answers an entry deleted while pending (trimmed by MAXLEN) with no fields.
        raise Poison("the entry is gone from the stream (trimmed before it was settled)")
    raw = fields.get(EVENT_FIELD.encode())
    if raw is None:
        raise Poison(f"no {EVENT_FIELD!r} field")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Poison("the event is not JSON") from None
    if not isinstance(event, dict):
        raise Poison("the event is not a JSON object")
    return event


def parse_event(event: Mapping[str, object]) -> Usage:
    """A decoded event (flat string fields, as the meter writes them) → a Usage, or Poison."""
    cost = _count(event, "cost_micro", _BIGINT_MAX)
    held = _count(event, "held_micro", _BIGINT_MAX)
    seller_id = _optional_uuid(event, "seller_id")
    if cost > 0 and seller_id is None:
        raise Poison("cost_micro: a charge with no seller to credit")
    if cost > held and not (held == 0 and cost == 0):
        # The hold is the worst case; more than it was never admitted (usage_records checks it too).
        raise Poison(f"cost_micro: {cost} is more than the {held} held")
    # Absent from events written before the field existed: nothing beyond the hold.
    beyond = _count(event, "beyond_hold_micro", _BIGINT_MAX) if "beyond_hold_micro" in event else 0
    if beyond > 0 and (held == 0 or seller_id is None):
        raise Poison("beyond_hold_micro: a cost beyond a hold that was never taken, or with no seller")
    return Usage(
        request_id=_matching(event, "request_id", _REQUEST_ID),
        buyer_id=_uuid(event, "user_id"),
        key_id=_optional_uuid(event, "key_id"),
        listing_id=_optional_uuid(event, "listing_id"),
        seller_id=seller_id,
        model=_model(event),
        prompt_tokens=_count(event, "prompt_tokens", _INT4_MAX),
        completion_tokens=_count(event, "completion_tokens", _INT4_MAX),
        cost_micro=cost,
        held_micro=held,
        outcome=_matching(event, "outcome", _OUTCOME),
        status=_count(event, "status", 999),
        stream=_flag(event, "stream"),
        created_at=_timestamp(event, "ts_ms"),
        beyond_hold_micro=beyond,
    )


def _text(event: Mapping[str, object], name: str) -> str:
    value = event.get(name)
    if not isinstance(value, str):
        raise Poison(f"{name}: missing or not a string")
    return value


def _matching(event: Mapping[str, object], name: str, pattern: re.Pattern[str]) -> str:
    value = _text(event, name)
    if not pattern.match(value):
        raise Poison(f"{name}: malformed {value[:80]!r}")
    return value


def _count(event: Mapping[str, object], name: str, ceiling: int) -> int:
    value = _text(event, name)
    if not _DIGITS.match(value) or int(value) > ceiling:
        raise Poison(f"{name}: not an integer in 0..{ceiling}: {value[:40]!r}")
    return int(value)


def _uuid(event: Mapping[str, object], name: str) -> str:
    value = _text(event, name)
    if _CANONICAL_UUID.match(value):  # what the gateway writes; uuid.UUID costs more than the rest
        return value
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Poison(f"{name}: not a UUID: {value[:80]!r}") from None


def _optional_uuid(event: Mapping[str, object], name: str) -> str | None:
    return None if event.get(name, "") == "" else _uuid(event, name)


def _model(event: Mapping[str, object]) -> str:
    value = _text(event, "model")
    if "\x00" in value:  # Postgres text cannot hold NUL
        raise Poison("model: contains a NUL character")
    return value[:MODEL_MAX_CHARS]


def _flag(event: Mapping[str, object], name: str) -> bool:
    value = _text(event, name)
    if value not in ("0", "1"):
        raise Poison(f"{name}: not 0 or 1: {value[:20]!r}")
    return value == "1"


def _timestamp(event: Mapping[str, object], name: str) -> datetime:
    value = _count(event, name, _BIGINT_MAX)
    if not _TS_MIN_MS <= value <= _TS_MAX_MS:
        raise Poison(f"{name}: {value} is not a plausible time")
    # Whole seconds plus milliseconds: exact, where value / 1000 could round a microsecond off.
    return datetime.fromtimestamp(value // 1000, tz=UTC) + timedelta(milliseconds=value % 1000)


def plan_batch(entries: Sequence[Entry]) -> BatchPlan:
    """Sort a batch into the rows to write, the entries to set aside, and the pairs to report.

    A second event under a request id already in the batch is the same event delivered again
    (the meter's pipeline retried, a consumer died before its ack): it is acked, never charged
    twice. If it differs, it is a different request reusing the id, and charging neither twice
    nor silently not at all is right: it goes to the dead stream for a person to settle.
    """
    plan = BatchPlan()
    first: dict[str, Usage] = {}
    for entry in entries:
        plan.entry_ids.append(entry.entry_id)
        usage = entry.usage
        if usage is None:
            plan.dead.append((entry, entry.reason or "invalid"))
            continue
        seen = first.get(usage.request_id)
        if seen is None:
            first[usage.request_id] = usage
            plan.usages.append(usage)
        elif not seen.same_request(usage):
            plan.dead.append((entry, COLLISION))
            continue
        plan.accepted.append(entry)
    return plan


COLLISION: Final = "request_id: already used by a different request (not a redelivery)"


def outcome(plan: BatchPlan, rejected: Mapping[str, str]) -> tuple[list[tuple[str, str]], list[tuple[Entry, str]]]:
    """After the commit: the (buyer, request) pairs settled, and every entry for the dead stream.

    `rejected` maps the request ids Postgres would not take (an unknown buyer, an id already
    stored for another request, a value it refused) to the reason; their entries join the dead.
    Pairs of redeliveries are kept: the hot balances' `applied` is idempotent, and a delivery
    after a crash between commit and ack is exactly when it still needs telling.
    """
    settled: list[tuple[str, str]] = []
    dead = list(plan.dead)
    for entry in plan.accepted:
        assert entry.usage is not None
        reason = rejected.get(entry.usage.request_id)
        if reason is None:
            settled.append((entry.usage.buyer_id, entry.usage.request_id))
        else:
            dead.append((entry, reason))
    return settled, dead


def self_dealing(usage: Usage) -> bool:
    """The account that pays for the request would be paid for serving it."""
    return usage.seller_id is not None and usage.seller_id == usage.buyer_id


def charge_of(usage: Usage, fee_rate: Decimal) -> Charge:
    """The seller is paid for everything the provider billed, the part beyond the hold included."""
    billed = usage.cost_micro + usage.beyond_hold_micro
    if self_dealing(usage):
        return Charge(seller_micro=0, fee_micro=billed)
    seller, fee = split_charge(billed, fee_rate)
    return Charge(seller_micro=seller, fee_micro=fee)


def usage_legs(
    cost_micro: int,
    charge: Charge,
    buyer: int,
    seller: int,
    platform: int,
    *,
    beyond_hold_micro: int = 0,
    exposure: int | None = None,
) -> list[tuple[int, int]]:
    """The usage transfer's legs (account id, signed micro-USD), zero legs dropped."""
    legs = [(buyer, -cost_micro), (seller, charge.seller_micro), (platform, charge.fee_micro)]
    if beyond_hold_micro:
        assert exposure is not None, "a cost beyond the hold is booked on the platform's exposure account"
        legs.append((exposure, -beyond_hold_micro))
    return [(account, amount) for account, amount in legs if amount != 0]


def is_costed(usage: Usage) -> bool:
    """Does the request move money (a charge, or a cost beyond its hold)?"""
    return usage.cost_micro > 0 or usage.beyond_hold_micro > 0


def idempotency_key(request_id: str) -> str:
    return "usage:" + request_id


def backoff_delay(failures: int, *, first: float = 0.1, ceiling: float = 5.0) -> float:
    """Seconds to wait after `failures` consecutive failed batches: doubling, bounded."""
    if failures <= 0:
        return 0.0
    return min(ceiling, first * float(2 ** min(failures - 1, 32)))
