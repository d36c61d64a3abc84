"""The audit against a real Postgres: a sound ledger passes, each kind of tampering is named.

One database holds a small sound ledger. Each tampering test works inside a transaction that is
rolled back at the end (the audit reads the caller's open transaction), so the tests never see
each other's damage. The CLI tests need committed data and get databases of their own.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest

from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.ledger import AccountKind, account_id, post, split_charge
from tests.support.scratch import migrated_database

pytestmark = pytest.mark.timeout(60)

CLI = str(Path(sys.executable).with_name("aichat-gateway"))
TEST_SECRET = "test-secret-key-" + "x" * 32


@dataclass(frozen=True)
class Seeded:
    buyer: uuid.UUID
    seller: uuid.UUID
    wallet: int
    earnings: int
    platform: int
    clearing: int


async def new_user(conn: asyncpg.Connection) -> uuid.UUID:
    user: uuid.UUID = await conn.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", f"{uuid.uuid4().hex}@example.com"
    )
    return user


async def charge(conn: asyncpg.Connection, s: Seeded, request_id: str, cost: int, *, held: int | None = None) -> None:
    """A usage record and its transfer, as the settlement worker writes them (in the caller's transaction)."""
    seller_part, fee = split_charge(cost, Decimal("0.10"))
    legs = [(s.wallet, -cost), (s.earnings, seller_part), (s.platform, fee)]
    transfer = await post(
        conn, idempotency_key=f"usage:{request_id}", kind="usage", legs=[leg for leg in legs if leg[1] != 0]
    )
    await conn.execute(
        """INSERT INTO usage_records (request_id, buyer_id, seller_id, model, cost_micro, held_micro, fee_micro,
                                      outcome, status, created_at, transfer_id)
           VALUES ($1, $2, $3, 'gpt-4o-mini', $4, $5, $6, 'ok', 200, now(), $7)""",
        request_id,
        s.buyer,
        s.seller,
        cost,
        cost if held is None else held,
        fee,
        transfer,
    )


async def seed(conn: asyncpg.Connection) -> Seeded:
    """A sound ledger: a top-up, two charges, a credit, a refund and a payout."""
    buyer, seller = await new_user(conn), await new_user(conn)
    s = Seeded(
        buyer,
        seller,
        await account_id(conn, AccountKind.BUYER, buyer),
        await account_id(conn, AccountKind.SELLER, seller),
        await account_id(conn, AccountKind.PLATFORM),
        await account_id(conn, AccountKind.STRIPE_CLEARING),
    )
    promotions = await account_id(conn, AccountKind.PROMOTIONS)
    payouts = await account_id(conn, AccountKind.PAYOUTS)
    async with conn.transaction():
        await post(
            conn,
            idempotency_key=f"topup:{buyer}",
            kind="topup",
            legs=[(s.clearing, -10_000_000), (s.wallet, 10_000_000)],
        )
        await charge(conn, s, f"req-{uuid.uuid4()}", 1_500_000, held=2_000_000)
        await charge(conn, s, f"req-{uuid.uuid4()}", 7)
        await post(
            conn, idempotency_key=f"credit:{buyer}", kind="credit", legs=[(promotions, -500_000), (s.wallet, 500_000)]
        )
        await post(
            conn,
            idempotency_key=f"refund:{buyer}",
            kind="refund",
            legs=[(s.wallet, -1_000_000), (s.clearing, 1_000_000)],
        )
        await post(
            conn,
            idempotency_key=f"payout:{seller}",
            kind="payout",
            legs=[(s.earnings, -1_000_000), (payouts, 1_000_000)],
        )
    return s


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database("audit") as url:
        yield url


@pytest.fixture
async def conn(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def seeded(conn: asyncpg.Connection) -> Seeded:
    return await seed(conn)


@pytest.fixture
async def tamper(conn: asyncpg.Connection, seeded: Seeded) -> AsyncIterator[asyncpg.Connection]:
    """The connection inside a transaction that is rolled back after the test."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield conn
    finally:
        await transaction.rollback()


async def named(conn: asyncpg.Connection) -> set[str]:
    return {breach.invariant for breach in await audit(conn)}


async def test_a_sound_ledger_passes_the_audit(conn: asyncpg.Connection, seeded: Seeded) -> None:
    assert await audit(conn) == []


async def test_a_balance_appearing_from_nowhere_breaks_the_zero_sum(tamper: asyncpg.Connection, seeded: Seeded) -> None:
    await tamper.execute("UPDATE ledger_accounts SET balance_micro = balance_micro + 1 WHERE id = $1", seeded.wallet)
    assert "balances_sum_to_zero" in await named(tamper)


async def test_a_stored_balance_differing_from_its_entries_is_named(tamper: asyncpg.Connection, seeded: Seeded) -> None:
    # Moved between two stored balances: the sum stays zero, but neither matches its entries.
    await tamper.execute("UPDATE ledger_accounts SET balance_micro = balance_micro + 3 WHERE id = $1", seeded.wallet)
    await tamper.execute("UPDATE ledger_accounts SET balance_micro = balance_micro - 3 WHERE id = $1", seeded.earnings)
    breaches = await audit(tamper)
    assert {b.invariant for b in breaches} == {"balance_matches_entries"}
    assert any(f"account {seeded.wallet} " in b.detail for b in breaches)


async def test_an_entry_with_a_wrong_balance_after_is_named(tamper: asyncpg.Connection, seeded: Seeded) -> None:
    entry = await tamper.fetchval("SELECT max(id) FROM ledger_entries WHERE account_id = $1", seeded.wallet)
    await tamper.execute("UPDATE ledger_entries SET balance_after_micro = balance_after_micro + 1 WHERE id = $1", entry)
    breaches = await audit(tamper)
    assert {b.invariant for b in breaches} == {"balance_after_consistent"}
    assert f"entry {entry} " in breaches[0].detail


async def test_a_transfer_without_entries_is_named(tamper: asyncpg.Connection) -> None:
    await tamper.execute("INSERT INTO transfers (idempotency_key, kind) VALUES ($1, 'adjustment')", f"k:{uuid.uuid4()}")
    assert await named(tamper) == {"transfer_balanced"}


async def test_a_transfer_whose_entries_do_not_sum_to_zero_is_named(tamper: asyncpg.Connection, seeded: Seeded) -> None:
    transfer = await tamper.fetchval(
        "SELECT transfer_id FROM ledger_entries WHERE account_id = $1 LIMIT 1", seeded.earnings
    )
    await tamper.execute(
        "UPDATE ledger_entries SET amount_micro = amount_micro + 1 WHERE transfer_id = $1 AND account_id = $2",
        transfer,
        seeded.earnings,
    )
    assert "transfer_balanced" in await named(tamper)


async def test_two_transfers_with_one_idempotency_key_are_named(tamper: asyncpg.Connection, seeded: Seeded) -> None:
    promotions = await account_id(tamper, AccountKind.PROMOTIONS)
    second = await post(
        tamper, idempotency_key=f"k:{uuid.uuid4()}", kind="credit", legs=[(promotions, -1), (seeded.wallet, 1)]
    )
    await tamper.execute("ALTER TABLE transfers DROP CONSTRAINT transfers_idempotency_key_key")
    await tamper.execute("UPDATE transfers SET idempotency_key = $1 WHERE id = $2", f"credit:{seeded.buyer}", second)
    assert await named(tamper) == {"one_transfer_per_key"}


async def test_usage_taking_a_buyer_below_zero_is_named(tamper: asyncpg.Connection, seeded: Seeded) -> None:
    balance = await tamper.fetchval("SELECT balance_micro FROM ledger_accounts WHERE id = $1", seeded.wallet)
    await post(
        tamper,
        idempotency_key=f"usage:{uuid.uuid4()}",
        kind="usage",
        legs=[(seeded.wallet, -(balance + 1)), (seeded.earnings, balance + 1)],
    )
    assert await named(tamper) == {"usage_never_overdraws"}


async def test_usage_from_a_balance_a_refund_left_negative_is_not_a_breach(
    tamper: asyncpg.Connection, seeded: Seeded
) -> None:
    balance = await tamper.fetchval("SELECT balance_micro FROM ledger_accounts WHERE id = $1", seeded.wallet)
    refund = [(seeded.wallet, -(balance + 5)), (seeded.clearing, balance + 5)]
    await post(tamper, idempotency_key=f"refund:{uuid.uuid4()}", kind="refund", legs=refund)
    usage = [(seeded.wallet, -3), (seeded.earnings, 3)]
    await post(tamper, idempotency_key=f"usage:{uuid.uuid4()}", kind="usage", legs=usage)
    assert await audit(tamper) == []


async def test_a_request_costing_more_than_it_held_is_named(tamper: asyncpg.Connection, seeded: Seeded) -> None:
    await tamper.execute("ALTER TABLE usage_records DROP CONSTRAINT usage_records_cost_within_hold")
    await charge(tamper, seeded, f"req-{uuid.uuid4()}", 5, held=3)
    assert await named(tamper) == {"usage_within_hold"}


async def test_a_usage_record_without_its_transfer_is_named(tamper: asyncpg.Connection, seeded: Seeded) -> None:
    request_id = f"req-{uuid.uuid4()}"
    await tamper.execute(
        """INSERT INTO usage_records (request_id, buyer_id, cost_micro, held_micro, created_at)
           VALUES ($1, $2, 10, 10, now())""",
        request_id,
        seeded.buyer,
    )
    breaches = await audit(tamper)
    assert {b.invariant for b in breaches} == {"usage_has_transfer"}
    assert request_id in breaches[0].detail


async def test_a_usage_transfer_debiting_other_than_the_cost_is_named(
    tamper: asyncpg.Connection, seeded: Seeded
) -> None:
    request_id = f"req-{uuid.uuid4()}"
    await charge(tamper, seeded, request_id, 100)
    await tamper.execute("UPDATE usage_records SET cost_micro = 99 WHERE request_id = $1", request_id)
    assert await named(tamper) == {"usage_has_transfer"}


async def test_usage_that_credits_its_own_buyers_seller_account_is_named(
    tamper: asyncpg.Connection, seeded: Seeded
) -> None:
    request_id = f"req-{uuid.uuid4()}"
    own_earnings = await account_id(tamper, AccountKind.SELLER, seeded.buyer)
    legs = [(seeded.wallet, -100), (own_earnings, 90), (seeded.platform, 10)]
    transfer = await post(tamper, idempotency_key=f"usage:{request_id}", kind="usage", legs=legs)
    await tamper.execute(
        """INSERT INTO usage_records (request_id, buyer_id, seller_id, cost_micro, held_micro, fee_micro, created_at,
                                      transfer_id)
           VALUES ($1, $2, $2, 100, 100, 10, now(), $3)""",
        request_id,
        seeded.buyer,
        transfer,
    )
    breaches = await audit(tamper)
    assert {b.invariant for b in breaches} == {"usage_never_pays_its_buyer"}
    assert request_id in breaches[0].detail


async def test_a_free_request_needs_no_transfer(tamper: asyncpg.Connection, seeded: Seeded) -> None:
    await tamper.execute(
        """INSERT INTO usage_records (request_id, buyer_id, created_at, outcome)
           VALUES ($1, $2, now(), 'upstream_error')""",
        f"req-{uuid.uuid4()}",
        seeded.buyer,
    )
    assert await audit(tamper) == []


def run_cli(dsn: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "GATEWAY_SECRET_KEY": TEST_SECRET}
    return subprocess.run([CLI, "audit"], env=env, capture_output=True, text=True, timeout=30, check=False)


async def _seed_at(dsn: str, tampering: str | None = None) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        s = await seed(conn)
        if tampering:
            await conn.execute(tampering, s.wallet)
    finally:
        await conn.close()


def test_the_cli_reports_a_sound_ledger_and_exits_0() -> None:
    with migrated_database("auditcli") as dsn:
        asyncio.run(_seed_at(dsn))
        result = run_cli(dsn)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ledger ok: 6 accounts, 6 transfers"


def test_the_cli_prints_each_breach_and_exits_1() -> None:
    with migrated_database("auditcli") as dsn:
        asyncio.run(_seed_at(dsn, "UPDATE ledger_accounts SET balance_micro = balance_micro + 1 WHERE id = $1"))
        result = run_cli(dsn)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("balances_sum_to_zero: ") for line in lines)
    assert any(line.startswith("balance_matches_entries: ") for line in lines)
