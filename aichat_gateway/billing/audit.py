"""The ledger audit: DESIGN.md's money invariants, checked against one snapshot of Postgres.

Each check is one query returning the offending rows (nothing when the invariant holds), so a
breach names the rows to look at. The checks read whole tables: this is an operator's tool and
a test oracle (run after every step of the stateful test), not something for the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from aichat_gateway.billing.ledger import Conn

# How many offending rows each check reports; one more line says how many were left out.
MAX_PER_CHECK: Final = 20


@dataclass(frozen=True, slots=True)
class Breach:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Check:
    invariant: str
    # Rows that break the invariant, at most MAX_PER_CHECK + 1 of them ($1 is the limit).
    sql: str
    describe: Callable[[asyncpg.Record], str]


CHECKS: Final[Sequence[Check]] = (
    Check(
        "balances_sum_to_zero",
        """SELECT total FROM (SELECT coalesce(sum(balance_micro), 0) AS total FROM ledger_accounts) s
           WHERE total <> 0 LIMIT $1""",
        lambda r: f"all account balances sum to {r['total']} micro-USD, not 0",
    ),
    Check(
        "balance_matches_entries",
        """SELECT a.id, a.kind, a.owner_id, a.balance_micro, coalesce(e.total, 0) AS total
           FROM ledger_accounts a
           LEFT JOIN (SELECT account_id, sum(amount_micro) AS total FROM ledger_entries GROUP BY account_id) e
                  ON e.account_id = a.id
           WHERE a.balance_micro <> coalesce(e.total, 0)
           ORDER BY a.id LIMIT $1""",
        lambda r: f"account {r['id']} ({_who(r)}) stores {r['balance_micro']} but its entries sum to {r['total']}",
    ),
    Check(
        "balance_after_consistent",
        """SELECT id, account_id, balance_after_micro, running FROM (
               SELECT id, account_id, balance_after_micro,
                      sum(amount_micro) OVER (PARTITION BY account_id ORDER BY id) AS running
               FROM ledger_entries) e
           WHERE balance_after_micro <> running
           ORDER BY id LIMIT $1""",
        lambda r: (
            f"entry {r['id']} on account {r['account_id']} says balance after {r['balance_after_micro']}, "
            f"the running sum is {r['running']}"
        ),
    ),
    Check(
        "transfer_balanced",
        """SELECT t.id, t.idempotency_key, count(e.id) AS legs, coalesce(sum(e.amount_micro), 0) AS total
           FROM transfers t LEFT JOIN ledger_entries e ON e.transfer_id = t.id
           GROUP BY t.id
           HAVING count(e.id) < 2 OR coalesce(sum(e.amount_micro), 0) <> 0
           ORDER BY t.id LIMIT $1""",
        lambda r: (
            f"transfer {r['id']} ({r['idempotency_key']}) has {r['legs']} entries summing to {r['total']} "
            "(needs >= 2 summing to 0)"
        ),
    ),
    Check(
        "one_transfer_per_key",
        """SELECT idempotency_key, count(*) AS n FROM transfers
           GROUP BY idempotency_key HAVING count(*) > 1
           ORDER BY idempotency_key LIMIT $1""",
        lambda r: f"idempotency key {r['idempotency_key']!r} has {r['n']} transfers",
    ),
    Check(
        # Only a refund or dispute may take a buyer below zero; usage is admitted against a hold,
        # so a usage debit may leave a buyer negative only if they were negative already, or if a
        # refund or dispute was posted between the request and its settlement: a request held while
        # the money was there and settled after a refund took it away is the refund's doing.
        "usage_never_overdraws",
        """SELECT e.id, e.transfer_id, a.owner_id, e.amount_micro, e.balance_after_micro
           FROM ledger_entries e
           JOIN ledger_accounts a ON a.id = e.account_id AND a.kind = 'buyer'
           JOIN transfers t ON t.id = e.transfer_id AND t.kind = 'usage'
           WHERE e.amount_micro < 0 AND e.balance_after_micro < 0
             AND e.balance_after_micro - e.amount_micro >= 0
             AND NOT EXISTS (
                 SELECT 1 FROM ledger_entries r
                 JOIN transfers rt ON rt.id = r.transfer_id AND rt.kind IN ('refund', 'dispute')
                 JOIN usage_records ur ON 'usage:' || ur.request_id = t.idempotency_key
                 WHERE r.account_id = e.account_id AND r.id < e.id AND r.amount_micro < 0
                   -- posted while the request could have been in flight (a day bounds any request)
                   AND r.created_at >= ur.created_at - interval '1 day')
           ORDER BY e.id LIMIT $1""",
        lambda r: (
            f"usage entry {r['id']} (transfer {r['transfer_id']}) took buyer {r['owner_id']} from "
            f"{r['balance_after_micro'] - r['amount_micro']} to {r['balance_after_micro']}"
        ),
    ),
    Check(
        "usage_within_hold",
        """SELECT request_id, cost_micro, held_micro FROM usage_records
           WHERE cost_micro > held_micro
           ORDER BY request_id LIMIT $1""",
        lambda r: f"request {r['request_id']} cost {r['cost_micro']} but held only {r['held_micro']}",
    ),
    Check(
        # Exactly one transfer 'usage:<request id>' whose debit of that request's buyer is the cost.
        "usage_has_transfer",
        """SELECT u.request_id, u.cost_micro, count(DISTINCT t.id) AS transfers,
                  coalesce(-sum(e.amount_micro), 0) AS debit
           FROM usage_records u
           LEFT JOIN transfers t ON t.idempotency_key = 'usage:' || u.request_id
           LEFT JOIN ledger_accounts a ON a.kind = 'buyer' AND a.owner_id = u.buyer_id
           LEFT JOIN ledger_entries e ON e.transfer_id = t.id AND e.account_id = a.id
           WHERE u.cost_micro > 0 OR u.beyond_hold_micro > 0
           GROUP BY u.request_id, u.cost_micro
           HAVING count(DISTINCT t.id) <> 1 OR coalesce(-sum(e.amount_micro), 0) <> u.cost_micro
           ORDER BY u.request_id LIMIT $1""",
        lambda r: (
            f"request {r['request_id']} cost {r['cost_micro']}: {r['transfers']} usage transfer(s) "
            f"debiting its buyer {r['debit']}"
        ),
    ),
    Check(
        # What a request cost beyond its hold is the platform's loss, booked on its exposure account
        # in the request's usage transfer: never dropped, never charged to the buyer.
        "beyond_hold_booked_to_exposure",
        """SELECT u.request_id, u.beyond_hold_micro, coalesce(-sum(e.amount_micro), 0) AS booked
           FROM usage_records u
           LEFT JOIN transfers t ON t.idempotency_key = 'usage:' || u.request_id
           LEFT JOIN ledger_accounts a ON a.kind = 'platform_exposure'
           LEFT JOIN ledger_entries e ON e.transfer_id = t.id AND e.account_id = a.id
           GROUP BY u.request_id, u.beyond_hold_micro
           HAVING coalesce(-sum(e.amount_micro), 0) <> u.beyond_hold_micro
           ORDER BY u.request_id LIMIT $1""",
        lambda r: (
            f"request {r['request_id']} cost {r['beyond_hold_micro']} beyond its hold; "
            f"{r['booked']} is booked on the platform's exposure account"
        ),
    ),
    Check(
        # DESIGN.md: a request never earns money for the account that pays it. Settlement books
        # such a request's whole cost to the platform; a usage credit to its buyer's seller account
        # means that defence (or the router's) was bypassed.
        "usage_never_pays_its_buyer",
        """SELECT u.request_id, u.buyer_id, e.amount_micro
           FROM usage_records u
           JOIN transfers t ON t.idempotency_key = 'usage:' || u.request_id
           JOIN ledger_entries e ON e.transfer_id = t.id AND e.amount_micro > 0
           JOIN ledger_accounts a ON a.id = e.account_id AND a.kind = 'seller' AND a.owner_id = u.buyer_id
           WHERE u.cost_micro > 0 OR u.beyond_hold_micro > 0
           ORDER BY u.request_id LIMIT $1""",
        lambda r: f"request {r['request_id']} credited {r['amount_micro']} to the seller account of its own buyer",
    ),
)


def _who(row: asyncpg.Record) -> str:
    return f"{row['kind']} {row['owner_id']}" if row["owner_id"] is not None else str(row["kind"])


async def audit(conn: Conn) -> list[Breach]:
    """Every breach of the money invariants; [] when the ledger is sound.

    All checks read one snapshot: a REPEATABLE READ, read-only transaction of its own, or the
    caller's transaction if one is open (the CLI opens one to count accounts in the same snapshot).
    """
    if conn.is_in_transaction():
        return await _run_checks(conn)
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _run_checks(conn)


async def _run_checks(conn: Conn) -> list[Breach]:
    breaches: list[Breach] = []
    for check in CHECKS:
        rows = await conn.fetch(check.sql, MAX_PER_CHECK + 1)
        breaches.extend(Breach(check.invariant, check.describe(row)) for row in rows[:MAX_PER_CHECK])
        if len(rows) > MAX_PER_CHECK:
            breaches.append(Breach(check.invariant, f"more than {MAX_PER_CHECK} rows break it; the rest not shown"))
    return breaches


async def ledger_size(conn: Conn) -> tuple[int, int]:
    """(accounts, transfers): what the CLI's all-clear line reports."""
    row = await conn.fetchrow("SELECT (SELECT count(*) FROM ledger_accounts), (SELECT count(*) FROM transfers)")
    assert row is not None
    return int(row[0]), int(row[1])
