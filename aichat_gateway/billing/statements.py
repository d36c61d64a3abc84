"""A buyer's statements: the ledger entries of their account and their settled requests, newest
first and keyset-paginated, as the JSON API (billing/api.py), the CSV export and the dashboard's
billing pages all read them: one query each, here.

Rows carry ids, kinds, amounts and model names only; never a listing's or a seller's name (the
buyer's view of the marketplace is anonymous) and never a secret.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from aichat_gateway.billing import ledger
from aichat_gateway.billing.amounts import usd

# What shows in a buyer's statement (payouts are a seller's).
BUYER_KINDS: tuple[str, ...] = ("topup", "usage", "credit", "refund", "dispute", "dispute_won", "adjustment")
assert set(BUYER_KINDS) <= ledger.TRANSFER_KINDS
CSV_PAGE = 1000
MAX_CSV_ROWS = 100_000


def iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# ---- transactions (ledger entries of the buyer's account) ----------------------------------------


@dataclass(frozen=True, slots=True)
class TransactionFilter:
    kind: str | None = None
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class Transaction:
    id: int
    kind: str
    amount_micro: int
    balance_after_micro: int
    created_at: datetime
    description: str

    def public(self) -> dict[str, str]:
        return {
            "id": str(self.id),
            "type": self.kind,
            "amount_usd": usd(self.amount_micro),
            "balance_after_usd": usd(self.balance_after_micro),
            "created_at": iso(self.created_at),
            "description": self.description,
        }


@dataclass(frozen=True, slots=True)
class TransactionPage:
    rows: list[Transaction]
    next_before: int | None  # the cursor: entries with a smaller id come next


_TRANSACTIONS_SQL = """
SELECT e.id, e.amount_micro, e.balance_after_micro, e.created_at, t.kind, t.memo
FROM ledger_entries e
JOIN ledger_accounts a ON a.id = e.account_id
JOIN transfers t ON t.id = e.transfer_id
WHERE a.kind = 'buyer' AND a.owner_id = $1 AND ($2::bigint IS NULL OR e.id < $2)
  AND ($3::text IS NULL OR t.kind = $3)
  AND ($4::timestamptz IS NULL OR e.created_at >= $4)
  AND ($5::timestamptz IS NULL OR e.created_at < $5)
ORDER BY e.id DESC
LIMIT $6
"""


def describe(kind: str, memo: dict[str, Any]) -> str:
    """A short, secret-free line for a statement; memos hold ids and reasons only."""
    if kind == "usage":
        return f"{memo.get('model', 'request')} {memo.get('request_id', '')}".strip()
    if kind == "credit":
        return f"credit: {memo.get('reason', '')}".strip()
    return kind.replace("_", " ")


async def buyer_transactions(
    db: asyncpg.Pool, user_id: str, filters: TransactionFilter, *, before: int | None, limit: int
) -> TransactionPage:
    rows = await db.fetch(
        _TRANSACTIONS_SQL, uuid.UUID(user_id), before, filters.kind, filters.since, filters.until, limit + 1
    )
    page = [
        Transaction(
            r["id"],
            r["kind"],
            r["amount_micro"],
            r["balance_after_micro"],
            r["created_at"],
            describe(r["kind"], r["memo"]),
        )
        for r in rows[:limit]
    ]
    return TransactionPage(page, page[-1].id if len(rows) > limit else None)


async def all_buyer_transactions(db: asyncpg.Pool, user_id: str, filters: TransactionFilter) -> list[Transaction]:
    """Every entry the filters select (for the CSV), page by page, at most MAX_CSV_ROWS."""
    found: list[Transaction] = []
    before: int | None = None
    while len(found) < MAX_CSV_ROWS:
        page = await buyer_transactions(db, user_id, filters, before=before, limit=CSV_PAGE)
        found.extend(page.rows)
        if page.next_before is None:
            break
        before = page.next_before
    return found[:MAX_CSV_ROWS]


CSV_COLUMNS = ("id", "created_at", "type", "description", "amount_usd", "balance_after_usd")


def transactions_csv(rows: Iterable[Transaction]) -> str:
    """Pure: the statement as CSV, the API's field names as the header. A cell that a spreadsheet
    would run as a formula (=, +, -, @ first) is quoted with a leading apostrophe, except amounts."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        shown = row.public()
        writer.writerow(
            [
                shown["id"],
                shown["created_at"],
                _cell(shown["type"]),
                _cell(shown["description"]),
                shown["amount_usd"],
                shown["balance_after_usd"],
            ]
        )
    return out.getvalue()


def _cell(text: str) -> str:
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# ---- usage (one row per settled request) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageFilter:
    key_id: uuid.UUID | None = None
    model: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageRow:
    request_id: str
    key_id: str | None
    key_name: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_micro: int
    outcome: str
    status: int
    stream: bool
    created_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "key_id": self.key_id,
            "key_name": self.key_name,
            "model": self.model,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": usd(self.cost_micro),
            "outcome": self.outcome,
            "status": self.status,
            "stream": self.stream,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class UsagePage:
    rows: list[UsageRow]
    next_after: tuple[datetime, str] | None  # the cursor: (created_at, request_id) of the last row


_USAGE_SQL = """
SELECT u.request_id, u.key_id, k.name AS key_name, u.model, u.prompt_tokens, u.completion_tokens, u.cost_micro,
       u.outcome, u.status, u.stream, u.created_at
FROM usage_records u
LEFT JOIN api_keys k ON k.id = u.key_id AND k.user_id = u.buyer_id
WHERE u.buyer_id = $1
  AND ($2::uuid IS NULL OR u.key_id = $2)
  AND ($3::text IS NULL OR u.model = $3)
  AND ($4::timestamptz IS NULL OR u.created_at >= $4)
  AND ($5::timestamptz IS NULL OR u.created_at < $5)
  AND ($6::timestamptz IS NULL OR (u.created_at, u.request_id) < ($6, $7))
ORDER BY u.created_at DESC, u.request_id DESC
LIMIT $8
"""


async def buyer_usage(
    db: asyncpg.Pool, user_id: str, filters: UsageFilter, *, after: tuple[datetime, str] | None, limit: int
) -> UsagePage:
    after_at, after_id = after if after else (None, None)
    rows = await db.fetch(
        _USAGE_SQL,
        uuid.UUID(user_id),
        filters.key_id,
        filters.model,
        filters.since,
        filters.until,
        after_at,
        after_id,
        limit + 1,
    )
    page = [
        UsageRow(
            request_id=r["request_id"],
            key_id=str(r["key_id"]) if r["key_id"] else None,
            key_name=r["key_name"],
            model=r["model"],
            prompt_tokens=r["prompt_tokens"],
            completion_tokens=r["completion_tokens"],
            cost_micro=r["cost_micro"],
            outcome=r["outcome"],
            status=r["status"],
            stream=r["stream"],
            created_at=r["created_at"],
        )
        for r in rows[:limit]
    ]
    last = page[-1] if len(rows) > limit else None
    return UsagePage(page, (last.created_at, last.request_id) if last else None)
