"""A seller's earnings, read in one snapshot: the figures of `GET /api/seller/earnings` and of the
seller's dashboard page (both call `seller_earnings`).

One repeatable-read transaction, so earned = paid out + pending + holding + available holds between
the figures of one answer (while no other transfer touches the seller):
- earned: the seller's share of every settled request (usage_records: cost + beyond_hold - fee, i.e.
  all the provider billed, less the fee);
- paid_out / pending: payouts paid / requested and not yet paid;
- holding: earned from requests of the last GATEWAY_EARNINGS_HOLD_DAYS days, not payable yet
  (`next_payable_at`: when the oldest of it leaves the holding period);
- available: the rest of the seller's earnings account balance, what can be requested now.
The breakdowns (`by_listing`, `by_day`, UTC days with earnings) cover `since`..`until` (request
time) and count the requests that earned something.

Listing names come from a join on the listings table in SQL: billing never imports marketplace.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import asyncpg

from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.payouts import Payouts


@dataclass(frozen=True, slots=True)
class ListingEarning:
    listing_id: str | None
    public_id: str | None
    name: str | None  # None: the listing row is gone
    earned_micro: int
    requests: int


@dataclass(frozen=True, slots=True)
class DayEarning:
    day: date
    earned_micro: int
    requests: int


@dataclass(frozen=True, slots=True)
class EarningsReport:
    earned_micro: int
    paid_out_micro: int
    pending_micro: int
    holding_micro: int
    next_payable_at: datetime | None
    available_micro: int
    since: datetime
    until: datetime
    by_listing: tuple[ListingEarning, ...]
    by_day: tuple[DayEarning, ...]


_TOTALS_SQL: Final = """
SELECT
  (SELECT coalesce(sum(cost_micro + beyond_hold_micro - fee_micro), 0)::bigint
   FROM usage_records WHERE seller_id = $1) AS earned,
  (SELECT coalesce(sum(amount_micro), 0)::bigint FROM payouts WHERE seller_id = $1 AND status = 'paid') AS paid,
  (SELECT coalesce(sum(amount_micro), 0)::bigint FROM payouts WHERE seller_id = $1 AND status = 'pending') AS pending,
  (SELECT coalesce(max(balance_micro), 0) FROM ledger_accounts WHERE kind = 'seller' AND owner_id = $1) AS balance
"""
_BY_LISTING_SQL: Final = """
SELECT u.listing_id, l.public_id, l.name,
       sum(u.cost_micro + u.beyond_hold_micro - u.fee_micro)::bigint AS earned, count(*) AS requests
FROM usage_records u LEFT JOIN listings l ON l.id = u.listing_id
WHERE u.seller_id = $1 AND u.created_at >= $2 AND u.created_at < $3 AND u.cost_micro + u.beyond_hold_micro > u.fee_micro
GROUP BY u.listing_id, l.public_id, l.name
ORDER BY earned DESC, u.listing_id
"""
_BY_DAY_SQL: Final = """
SELECT (u.created_at AT TIME ZONE 'UTC')::date AS day,
       sum(u.cost_micro + u.beyond_hold_micro - u.fee_micro)::bigint AS earned, count(*) AS requests
FROM usage_records u
WHERE u.seller_id = $1 AND u.created_at >= $2 AND u.created_at < $3 AND u.cost_micro + u.beyond_hold_micro > u.fee_micro
GROUP BY day
ORDER BY day
"""


async def seller_earnings(
    db: asyncpg.Pool, payouts: Payouts, seller_id: str, since: datetime, until: datetime
) -> EarningsReport:
    """The seller's totals now, and the breakdowns over [since, until) (see earnings_window)."""
    seller = uuid.UUID(seller_id)
    async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        totals = await conn.fetchrow(_TOTALS_SQL, seller)
        assert totals is not None  # aggregates always answer one row
        split = await payouts.payable(conn, seller_id, totals["balance"], payouts.now())
        listings = await conn.fetch(_BY_LISTING_SQL, seller, since, until)
        days = await conn.fetch(_BY_DAY_SQL, seller, since, until)
    return EarningsReport(
        earned_micro=totals["earned"],
        paid_out_micro=totals["paid"],
        pending_micro=totals["pending"],
        holding_micro=split.holding_micro,
        next_payable_at=split.next_release,
        available_micro=split.available_micro,
        since=since,
        until=until,
        by_listing=tuple(
            ListingEarning(
                str(r["listing_id"]) if r["listing_id"] else None, r["public_id"], r["name"], r["earned"], r["requests"]
            )
            for r in listings
        ),
        by_day=tuple(DayEarning(r["day"], r["earned"], r["requests"]) for r in days),
    )


def earnings_json(report: EarningsReport) -> dict[str, Any]:
    """The API's answer (schemas.Earnings)."""
    return {
        "earned_usd": usd(report.earned_micro),
        "paid_out_usd": usd(report.paid_out_micro),
        "pending_usd": usd(report.pending_micro),
        "holding_usd": usd(report.holding_micro),
        "next_payable_at": iso(report.next_payable_at),
        "available_usd": usd(report.available_micro),
        "since": iso(report.since),
        "until": iso(report.until),
        "by_listing": [
            {
                "listing_id": item.listing_id,
                "public_id": item.public_id,
                "name": item.name,
                "earned_usd": usd(item.earned_micro),
                "requests": item.requests,
            }
            for item in report.by_listing
        ],
        "by_day": [
            {"date": item.day.isoformat(), "earned_usd": usd(item.earned_micro), "requests": item.requests}
            for item in report.by_day
        ],
    }


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None
