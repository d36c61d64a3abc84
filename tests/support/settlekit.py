"""Helpers shared by the settlement worker's integration tests: users, money, usage events."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
from redis.asyncio import Redis

from aichat_gateway.billing.ledger import AccountKind, Conn, account_id, post, split_charge
from aichat_gateway.billing.meter import Meter, UsageEvent

FEE = Decimal("0.10")
FUNDS = 10**12  # every test buyer's top-up: far more than any test spends
TS_MS = 1_717_171_717_000


async def new_user(conn: Conn) -> str:
    user: uuid.UUID = await conn.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", f"{uuid.uuid4().hex}@example.com"
    )
    return str(user)


async def fund(conn: Conn, buyer: str, micro: int = FUNDS) -> None:
    """A top-up, so usage never takes the buyer below zero (what holds guarantee in production)."""
    clearing = await account_id(conn, AccountKind.STRIPE_CLEARING)
    wallet = await account_id(conn, AccountKind.BUYER, buyer)
    async with conn.transaction():
        await post(
            conn, idempotency_key=f"topup:{uuid.uuid4()}", kind="topup", legs=[(clearing, -micro), (wallet, micro)]
        )


async def funded_buyers(conn: Conn, n: int) -> list[str]:
    buyers = [await new_user(conn) for _ in range(n)]
    for buyer in buyers:
        await fund(conn, buyer)
    return buyers


def usage_event(buyer: str, seller: str | None, cost: int, *, request_id: str | None = None, n: int = 0) -> UsageEvent:
    """A finished request's event as the gateway meters it; cost 0 with no seller = no listing reached."""
    return UsageEvent(
        request_id=request_id or f"req_{uuid.uuid4().hex}",
        key_id=str(uuid.uuid4()),
        user_id=buyer,
        listing_id=str(uuid.uuid4()) if seller else "",
        model="gpt-4o-mini",
        prompt_tokens=10 + n % 7,
        completion_tokens=20 + n % 11,
        usage_source="upstream",
        latency_ms=100,
        ttft_ms=20,
        outcome="ok" if seller else "no_listing",
        status=200 if seller else 404,
        attempts=1,
        stream=n % 2 == 0,
        ts_ms=TS_MS + n,
        seller_id=seller or "",
        cost_micro=cost,
        held_micro=cost + n % 3,
    )


def mixed_events(buyers: Sequence[str], sellers: Sequence[str], count: int) -> list[UsageEvent]:
    """`count` events over every buyer and seller; every tenth one reached no listing (costs 0)."""
    events = []
    for n in range(count):
        buyer = buyers[n % len(buyers)]
        if n % 10 == 9:
            events.append(usage_event(buyer, None, 0, n=n))
        else:
            events.append(usage_event(buyer, sellers[n % len(sellers)], 1 + (n * 7919) % 50_000, n=n))
    return events


async def append(redis: Redis, prefix: str, events: Iterable[UsageEvent], chunk: int = 2_000) -> None:
    """XADD each event exactly as the gateway's meter does."""
    meter = Meter(redis, prefix)
    batch = list(events)
    for start in range(0, len(batch), chunk):
        pipe = redis.pipeline(transaction=False)
        for event in batch[start : start + chunk]:
            meter.record_in(pipe, event)
        await pipe.execute()


@dataclass
class Expected:
    """What settling a list of events must come to in the ledger."""

    buyer: dict[str, int] = field(default_factory=dict)  # owner → change of balance
    seller: dict[str, int] = field(default_factory=dict)
    platform: int = 0
    transfers: int = 0
    cost: int = 0

    @classmethod
    def of(cls, events: Iterable[UsageEvent], fee: Decimal = FEE) -> Expected:
        expected = cls()
        seen: set[str] = set()
        for event in events:
            if event.request_id in seen:
                continue
            seen.add(event.request_id)
            seller_part, platform_part = split_charge(event.cost_micro, fee)
            expected.buyer[event.user_id] = expected.buyer.get(event.user_id, 0) - event.cost_micro
            expected.cost += event.cost_micro
            if event.cost_micro:
                expected.seller[event.seller_id] = expected.seller.get(event.seller_id, 0) + seller_part
                expected.platform += platform_part
                expected.transfers += 1
        return expected


async def balances(conn: Conn, kind: AccountKind) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT owner_id::text AS owner, balance_micro FROM ledger_accounts WHERE kind = $1", kind.value
    )
    return {row["owner"]: int(row["balance_micro"]) for row in rows}


async def platform_balance(conn: Conn) -> int:
    value = await conn.fetchval("SELECT balance_micro FROM ledger_accounts WHERE kind = 'platform'")
    return int(value or 0)


async def usage_totals(conn: Conn) -> tuple[int, int, int]:
    """(usage rows, their summed cost, usage transfers)."""
    row = await conn.fetchrow(
        """SELECT (SELECT count(*) FROM usage_records) AS n,
                  (SELECT coalesce(sum(cost_micro), 0) FROM usage_records) AS cost,
                  (SELECT count(*) FROM transfers WHERE kind = 'usage') AS t"""
    )
    assert row is not None
    return int(row["n"]), int(row["cost"]), int(row["t"])


class Recorder:
    """An `after_commit` that remembers every call, and whether the rows were visible by then."""

    def __init__(self, dsn: str | None = None) -> None:
        self.calls: list[list[tuple[str, str]]] = []
        self.visible: list[bool] = []
        self._dsn = dsn

    async def __call__(self, settled: Sequence[tuple[str, str]]) -> None:
        self.calls.append(list(settled))
        if self._dsn is not None:
            # From a connection of its own: only committed rows can be seen from here.
            conn = await asyncpg.connect(self._dsn)
            try:
                ids = [request_id for _, request_id in settled]
                found = await conn.fetchval("SELECT count(*) FROM usage_records WHERE request_id = ANY($1)", ids)
                self.visible.append(found == len(set(ids)))
            finally:
                await conn.close()

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [pair for call in self.calls for pair in call]
