"""Seller earnings made the way the settlement worker makes them (a credited buyer, one usage
transfer and its usage_records row), at a time the test picks: shared by the payout tests and the
attack suite's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg

from aichat_gateway.billing import ledger

FEE = Decimal("0.10")
NOW = datetime(2030, 1, 16, 12, 0, tzinfo=UTC)  # a Wednesday, ISO week 2030-W03
HOLD = timedelta(days=7)  # GATEWAY_EARNINGS_HOLD_DAYS' default
PAYABLE = NOW - HOLD - timedelta(days=3)  # when earnings were made unless a test says otherwise


async def earn(
    db: asyncpg.Connection, seller_id: str, cost_micro: int, *, listing_id: str | None = None, at: datetime = PAYABLE
) -> int:
    """One settled request that cost `cost_micro` and was served by the seller; the seller's share."""
    buyer = await db.fetchval(
        "INSERT INTO users (email, password_hash) VALUES ($1, 'stand-in') RETURNING id",
        f"buyer-{uuid.uuid4().hex[:10]}@example.com",
    )
    share, fee = ledger.split_charge(cost_micro, FEE)
    request_id = "req_" + uuid.uuid4().hex
    async with db.transaction():
        buyer_acc = await ledger.account_id(db, ledger.AccountKind.BUYER, buyer)
        promotions = await ledger.account_id(db, ledger.AccountKind.PROMOTIONS)
        seller_acc = await ledger.account_id(db, ledger.AccountKind.SELLER, seller_id)
        platform = await ledger.account_id(db, ledger.AccountKind.PLATFORM)
        await ledger.post(
            db,
            idempotency_key=f"credit:test:{request_id}",
            kind="credit",
            legs=[(promotions, -cost_micro), (buyer_acc, cost_micro)],
        )
        legs = [(buyer_acc, -cost_micro), (seller_acc, share)] + ([(platform, fee)] if fee else [])
        transfer = await ledger.post(
            db, idempotency_key=f"usage:{request_id}", kind="usage", legs=legs, memo={"request_id": request_id}
        )
        await db.execute(
            """INSERT INTO usage_records (request_id, buyer_id, listing_id, seller_id, model, prompt_tokens,
                   completion_tokens, cost_micro, held_micro, fee_micro, outcome, status, created_at, transfer_id)
               VALUES ($1, $2, $3, $4, 'gpt-4o-mini', 10, 20, $5, $5, $6, 'ok', 200, $7, $8)""",
            request_id,
            buyer,
            uuid.UUID(listing_id) if listing_id else None,
            uuid.UUID(seller_id),
            cost_micro,
            fee,
            at,
            transfer,
        )
    return share
