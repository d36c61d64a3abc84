"""Seller payouts: requested, then paid by Stripe (Connect transfer) or by hand, or undone.

Money and state move together. A request moves the amount out of the seller's earnings at once
(transfer 'payout:<id>': seller -P, payouts +P) in the transaction that creates the payout row, so
what is pending can never be requested again. From 'pending' a payout ends exactly once:
- paid: Stripe made the transfer, or an admin marks it paid after a bank transfer; no money moves
  (it left the seller's account when requested);
- failed (Stripe refused) or cancelled (an admin): the reversal 'payout-reversal:<id>'
  (kind 'payout_failed': payouts -P, seller +P) puts it back.

Concurrency. A request locks the seller's and the payouts account (ascending id, as every ledger
writer does) before reading what is available, so two requests cannot both take the same money. A
state change locks the payout row first (FOR UPDATE); `process` keeps that lock across the Stripe
call, so an admin cancelling meanwhile waits and then finds it paid (409) instead of undoing money
that Stripe has already sent. Stripe's Idempotency-Key `payout-<id>` makes a retried transfer (after
a timeout, a crash) return the first one.

Amounts are whole cents (Stripe's unit): "everything available" is floored to the cent and the
sub-cent remainder stays available; an explicit amount must be whole cents.

Controls (issue 12: promotional credit cashed out through self-dealing):
- holding period: what a seller earned from requests made in the last `hold_days` days
  (GATEWAY_EARNINGS_HOLD_DAYS, the chargeback window) is held; "available" is the earnings balance
  minus that, never below zero. Requests and the weekly run take only what is available.
- approval: a payout above `approval_micro` (GATEWAY_PAYOUT_APPROVAL_USD) is created pending and
  awaiting approval; `process` (and so the weekly run) leaves it until an admin `approve`s it
  (who and when are recorded). Cancel and mark-paid work on it as on any pending payout.
- a request key (the seller's Idempotency-Key, the weekly run's) replayed with another body is a
  Conflict, not the first payout: the answer must never show an amount that was not asked for.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import asyncpg

from aichat_gateway import audittrail
from aichat_gateway.billing import ledger
from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.errors import BillingNotFound, Conflict, PaymentsUnavailable
from aichat_gateway.billing.payoutplan import (
    STATUSES,
    Payable,
    approval_micro,
    cents,
    check_approvable,
    check_pending,
    check_replay,
    decide_amount,
    hold_start,
    iso_week,
    min_payout_micro,
    needs_approval,
    requested_value,
    reversal_key,
    run_key,
    split_earnings,
    transfer_key,
)
from aichat_gateway.billing.stripe_client import StripeClient, TransferRefused
from aichat_gateway.billing.stripe_effects import CURRENCY
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.settings import Settings

log = get_logger(__name__)

# Opens a Stripe client for one use; tests hand in one over an httpx MockTransport.
StripeOpener = Callable[[], AbstractAsyncContextManager[StripeClient]]


# --- data -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Payout:
    id: str
    seller_id: str
    amount_micro: int
    status: str
    method: str
    destination: str | None
    stripe_transfer_id: str | None
    reference: str | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    paid_at: datetime | None
    approval_required: bool = False
    approved_by: str | None = None
    approved_at: datetime | None = None
    requested_micro: int | None = None  # EVERYTHING, an amount, or None (requested before 0008)

    @property
    def awaiting_approval(self) -> bool:
        return self.status == "pending" and self.approval_required and self.approved_at is None

    @classmethod
    def from_row(cls, row: asyncpg.Record | None) -> Payout:
        assert row is not None, "the payout row is locked (or was just inserted) by this transaction"
        return cls(
            id=str(row["id"]),
            seller_id=str(row["seller_id"]),
            amount_micro=int(row["amount_micro"]),
            status=row["status"],
            method=row["method"],
            destination=row["destination"],
            stripe_transfer_id=row["stripe_transfer_id"],
            reference=row["reference"],
            failure_reason=row["failure_reason"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            paid_at=row["paid_at"],
            approval_required=row["approval_required"],
            approved_by=str(row["approved_by"]) if row["approved_by"] else None,
            approved_at=row["approved_at"],
            requested_micro=row["requested_micro"],
        )


@dataclass(frozen=True, slots=True)
class OpenPayout:
    """A pending payout in the admin's list, with its seller's e-mail (billing reads users in SQL only)."""

    payout: Payout
    seller_email: str | None


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one scheduled run did: new payouts, and how the pending ones it processed ended."""

    week: str
    requested: int = 0
    skipped: int = 0
    paid: int = 0
    failed: int = 0
    pending: int = 0  # Stripe did not answer: tried again next run
    awaiting_approval: int = 0  # above GATEWAY_PAYOUT_APPROVAL_USD, not approved yet: not sent


def _id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise BillingNotFound("no such payout") from None


# Served from the (seller_id, created_at) index; rows that earned nothing (self-dealing) are left out.
_HELD_SQL: Final = """
SELECT coalesce(sum(cost_micro + beyond_hold_micro - fee_micro), 0)::bigint AS held, min(created_at) AS oldest
FROM usage_records
WHERE seller_id = $1 AND created_at > $2 AND cost_micro + beyond_hold_micro > fee_micro
"""


async def payable(conn: ledger.Conn, seller_id: str, balance_micro: int, now: datetime, hold_days: int) -> Payable:
    """`balance_micro` (the seller's earnings account) split by the holding period at `now`."""
    since = hold_start(now, hold_days)
    if since is None:
        return split_earnings(balance_micro, 0, None, hold_days)
    row = await conn.fetchrow(_HELD_SQL, uuid.UUID(seller_id), since)
    assert row is not None  # an aggregate always answers one row
    return split_earnings(balance_micro, int(row["held"]), row["oldest"], hold_days)


# --- service --------------------------------------------------------------------------------


class Payouts:
    def __init__(
        self,
        db: asyncpg.Pool,
        *,
        min_micro: int,
        stripe: StripeOpener | None,
        hold_days: int,
        approval_micro: int,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
    ) -> None:
        self._db = db
        self._min = min_micro
        self._stripe = stripe
        self._hold_days = hold_days
        self._approval = approval_micro
        self._clock = clock  # wall time, seconds: where the holding period ends
        self._new_id = new_id

    @classmethod
    def from_settings(cls, db: asyncpg.Pool, settings: Settings, *, clock: Callable[[], float] = time.time) -> Payouts:
        """Without STRIPE_SECRET_KEY, payouts are requested and paid by hand (`process` leaves them)."""
        opener: StripeOpener | None = None
        if settings.stripe_secret_key is not None:

            def opener() -> AbstractAsyncContextManager[StripeClient]:
                return StripeClient.open(settings)

        return cls(
            db,
            min_micro=min_payout_micro(settings.payout_min_usd),
            stripe=opener,
            hold_days=settings.earnings_hold_days,
            approval_micro=approval_micro(settings.payout_approval_usd),
            clock=clock,
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def payable(self, conn: ledger.Conn, seller_id: str, balance_micro: int, now: datetime) -> Payable:
        return await payable(conn, seller_id, balance_micro, now, self._hold_days)

    async def request(
        self,
        seller_id: str,
        amount_micro: int | None,
        *,
        request_key: str | None = None,
        now: datetime | None = None,
        actor_id: str | None = None,
        ip: str | None = None,
    ) -> tuple[Payout, bool]:
        """A new pending payout (and True), or — for a `request_key` used before with the same
        amount — that one (False). Takes only what is available at `now` (default: the clock).
        A new payout is in the audit trail (`payout.requested`) exactly when it exists: the event is
        written in its transaction; `actor_id` None is the scheduled run."""
        at = now if now is not None else self.now()
        async with self._db.acquire() as conn, conn.transaction():
            seller = await ledger.account_id(conn, ledger.AccountKind.SELLER, seller_id)
            payouts = await ledger.account_id(conn, ledger.AccountKind.PAYOUTS)
            # Settlement locks the seller's account too, so nothing is earned while this decides.
            balances = await ledger.lock_accounts(conn, [seller, payouts])
            if request_key is not None:
                found = await conn.fetchrow("SELECT * FROM payouts WHERE request_key = $1", request_key)
                if found is not None:
                    first = Payout.from_row(found)
                    check_replay(first.requested_micro, amount_micro)
                    return first, False
            split = await self.payable(conn, seller_id, balances[seller], at)
            amount = decide_amount(amount_micro, split.available_micro, self._min, holding_micro=split.holding_micro)
            approval = needs_approval(amount, self._approval)
            destination: str | None = await conn.fetchval(
                "SELECT stripe_account_id FROM seller_payout_accounts WHERE user_id = $1", uuid.UUID(seller_id)
            )
            payout_id = str(self._new_id())
            transfer = await ledger.post(
                conn,
                idempotency_key=transfer_key(payout_id),
                kind="payout",
                legs=[(seller, -amount), (payouts, amount)],
                memo={"payout_id": payout_id, "seller_id": seller_id},
            )
            row = await conn.fetchrow(
                """INSERT INTO payouts (id, seller_id, amount_micro, method, destination, request_key, transfer_id,
                                        approval_required, requested_micro)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *""",
                uuid.UUID(payout_id),
                uuid.UUID(seller_id),
                amount,
                "stripe" if destination else "manual",
                destination,
                request_key,
                transfer,
                approval,
                requested_value(amount_micro),
            )
            await audittrail.record(
                conn,
                audittrail.PAYOUT_REQUESTED,
                subject_id=seller_id,
                actor_id=actor_id,
                target_type="payout",
                target_id=payout_id,
                ip=ip,
                detail={"amount_usd": usd(amount), "method": "stripe" if destination else "manual"},
            )
        payout = Payout.from_row(row)
        log.info(
            "payout_requested",
            payout_id=payout.id,
            seller_id=seller_id,
            amount_micro=amount,
            method=payout.method,
            awaiting_approval=approval,
        )
        return payout, True

    async def get(self, payout_id: str, seller_id: str | None = None) -> Payout:
        """One payout; with `seller_id`, only that seller's (another's looks absent: 404)."""
        row = await self._db.fetchrow(
            "SELECT * FROM payouts WHERE id = $1 AND ($2::uuid IS NULL OR seller_id = $2)",
            _id(payout_id),
            uuid.UUID(seller_id) if seller_id else None,
        )
        if row is None:
            raise BillingNotFound("no such payout")
        return Payout.from_row(row)

    async def page(self, seller_id: str, limit: int, after: tuple[datetime, str] | None) -> list[Payout]:
        """The seller's payouts, newest first, after the (created_at, id) keyset cursor."""
        rows = await self._db.fetch(
            """SELECT * FROM payouts
               WHERE seller_id = $1 AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
               ORDER BY created_at DESC, id DESC LIMIT $4""",
            uuid.UUID(seller_id),
            after[0] if after else None,
            _id(after[1]) if after else None,
            limit,
        )
        return [Payout.from_row(r) for r in rows]

    async def open_payouts(self, limit: int = 100) -> list[OpenPayout]:
        """Admin: every seller's pending payouts, those awaiting approval first, then oldest first."""
        rows = await self._db.fetch(
            """SELECT p.*, u.email AS seller_email FROM payouts p LEFT JOIN users u ON u.id = p.seller_id
               WHERE p.status = 'pending'
               ORDER BY (p.approval_required AND p.approved_at IS NULL) DESC, p.created_at, p.id
               LIMIT $1""",
            limit,
        )
        return [OpenPayout(Payout.from_row(r), r["seller_email"]) for r in rows]

    async def for_admin(self, payout_id: str) -> OpenPayout:
        """Admin: one payout (any status) with its seller's e-mail."""
        row = await self._db.fetchrow(
            """SELECT p.*, u.email AS seller_email FROM payouts p LEFT JOIN users u ON u.id = p.seller_id
               WHERE p.id = $1""",
            _id(payout_id),
        )
        if row is None:
            raise BillingNotFound("no such payout")
        return OpenPayout(Payout.from_row(row), row["seller_email"])

    async def set_account(
        self, seller_id: str, stripe_account_id: str, *, ip: str | None = None, how: str = "entered"
    ) -> None:
        """Store the seller's Connect account (by hand, or made by onboarding: `how`), audited with it."""
        async with self._db.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO seller_payout_accounts (user_id, stripe_account_id) VALUES ($1, $2)
                   ON CONFLICT (user_id)
                   DO UPDATE SET stripe_account_id = excluded.stripe_account_id, updated_at = now()""",
                uuid.UUID(seller_id),
                stripe_account_id,
            )
            await audittrail.record(
                conn,
                audittrail.PAYOUT_ACCOUNT,
                subject_id=seller_id,
                actor_id=seller_id,
                target_type="payout_account",
                target_id=stripe_account_id,
                ip=ip,
                detail={"stripe_account_id": stripe_account_id, "how": how},
            )
        log.info("payout_account_set", seller_id=seller_id, how=how)

    async def account(self, seller_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._db.fetchrow(
            "SELECT stripe_account_id, updated_at FROM seller_payout_accounts WHERE user_id = $1", uuid.UUID(seller_id)
        )
        return row

    async def mark_paid(self, payout_id: str, reference: str, admin_id: str) -> Payout:
        """Paid by other means (a bank transfer): no money moves, it left the seller when requested."""
        async with self._db.acquire() as conn, conn.transaction():
            payout = await self._locked(conn, payout_id)
            check_pending(payout.status, "marked paid")
            row = await conn.fetchrow(
                """UPDATE payouts SET status = 'paid', method = 'manual', reference = $2, decided_by = $3,
                          paid_at = now(), updated_at = now()
                   WHERE id = $1 RETURNING *""",
                uuid.UUID(payout.id),
                reference,
                uuid.UUID(admin_id),
            )
            await _record_decision(conn, payout, admin_id, "marked paid", reference=reference)
        log.info("payout_marked_paid", payout_id=payout.id, admin_id=admin_id)
        return Payout.from_row(row)

    async def approve(self, payout_id: str, admin_id: str) -> Payout:
        """An admin lets a payout above the approval amount be sent (by the next `process`)."""
        async with self._db.acquire() as conn, conn.transaction():
            payout = await self._locked(conn, payout_id)
            check_approvable(payout.status, payout.approval_required, payout.approved_at)
            row = await conn.fetchrow(
                """UPDATE payouts SET approved_by = $2, approved_at = now(), updated_at = now()
                   WHERE id = $1 RETURNING *""",
                uuid.UUID(payout.id),
                uuid.UUID(admin_id),
            )
            await _record_decision(conn, payout, admin_id, "approved")
        log.info("payout_approved", payout_id=payout.id, admin_id=admin_id, amount_micro=payout.amount_micro)
        return Payout.from_row(row)

    async def cancel(self, payout_id: str, admin_id: str) -> Payout:
        async with self._db.acquire() as conn, conn.transaction():
            payout = await self._locked(conn, payout_id)
            check_pending(payout.status, "cancelled")
            done = await self._undo(conn, payout, "cancelled", reason=None, admin_id=admin_id)
            await _record_decision(conn, payout, admin_id, "cancelled")
        log.info("payout_cancelled", payout_id=payout.id, admin_id=admin_id)
        return done

    async def process(self, payout_id: str) -> Payout:
        """Send a pending Stripe payout. Refused → failed and reversed; Stripe unreachable (or not
        configured) → still pending, for the next run; anything not pending, manual or awaiting an
        admin's approval → unchanged."""
        async with self._db.acquire() as conn, conn.transaction():
            payout = await self._locked(conn, payout_id)
            if payout.status != "pending" or payout.method != "stripe" or self._stripe is None:
                return payout
            if payout.awaiting_approval:
                return payout
            assert payout.destination is not None  # the table's check: a Stripe payout has one
            try:
                async with self._stripe() as stripe:
                    answer = await stripe.create_transfer(
                        amount_cents=cents(payout.amount_micro),
                        currency=CURRENCY,
                        destination=payout.destination,
                        metadata={"payout_id": payout.id, "seller_id": payout.seller_id},
                        idempotency_key=f"payout-{payout.id}",
                    )
            except PaymentsUnavailable as exc:
                log.warning("payout_stripe_unavailable", payout_id=payout.id, reason=exc.message)
                return payout
            if isinstance(answer, TransferRefused):
                log.warning("payout_refused", payout_id=payout.id, status=answer.status, reason=answer.message)
                return await self._undo(conn, payout, "failed", reason=answer.message, admin_id=None)
            row = await conn.fetchrow(
                """UPDATE payouts SET status = 'paid', stripe_transfer_id = $2, paid_at = now(), updated_at = now()
                   WHERE id = $1 RETURNING *""",
                uuid.UUID(payout.id),
                answer.id,
            )
        log.info("payout_paid", payout_id=payout.id, stripe_transfer_id=answer.id)
        return Payout.from_row(row)

    async def run(self, now: datetime) -> RunReport:
        """The scheduled run: a payout of everything available at `now` (held earnings excluded)
        for each seller with a connected account and at least the minimum (once per seller and ISO
        week), then every pending Stripe payout is sent (this week's, sellers' own requests, and
        earlier ones Stripe did not answer) except those awaiting an admin's approval."""
        week = iso_week(now)
        sellers = await self._db.fetch(
            """SELECT a.owner_id FROM ledger_accounts a
               JOIN seller_payout_accounts s ON s.user_id = a.owner_id
               WHERE a.kind = 'seller' AND a.balance_micro >= $1
               ORDER BY a.owner_id""",
            self._min,
        )
        requested = skipped = 0
        for row in sellers:
            seller_id = str(row["owner_id"])
            try:
                _, created = await self.request(seller_id, None, request_key=run_key(seller_id, week), now=now)
            except Conflict:  # below the minimum once held earnings are left out, or the balance moved
                skipped += 1
                continue
            requested += created
            skipped += not created
        pending = await self._db.fetch(
            """SELECT id FROM payouts
               WHERE status = 'pending' AND method = 'stripe' AND (NOT approval_required OR approved_at IS NOT NULL)
               ORDER BY created_at, id"""
        )
        ended = {status: 0 for status in STATUSES}
        for row in pending:
            ended[(await self.process(str(row["id"]))).status] += 1
        awaiting = await self._db.fetchval(
            "SELECT count(*) FROM payouts WHERE status = 'pending' AND approval_required AND approved_at IS NULL"
        )
        report = RunReport(week, requested, skipped, ended["paid"], ended["failed"], ended["pending"], awaiting)
        log.info("payout_run", **dataclasses.asdict(report))
        return report

    async def _locked(self, conn: ledger.Conn, payout_id: str) -> Payout:
        row = await conn.fetchrow("SELECT * FROM payouts WHERE id = $1 FOR UPDATE", _id(payout_id))
        if row is None:
            raise BillingNotFound("no such payout")
        return Payout.from_row(row)

    async def _undo(
        self, conn: ledger.Conn, payout: Payout, status: str, *, reason: str | None, admin_id: str | None
    ) -> Payout:
        """Put the money back on the seller's earnings and end the payout as `status`."""
        seller = await ledger.account_id(conn, ledger.AccountKind.SELLER, payout.seller_id)
        payouts = await ledger.account_id(conn, ledger.AccountKind.PAYOUTS)
        key = reversal_key(payout.id)
        transfer = await ledger.post(
            conn,
            idempotency_key=key,
            kind="payout_failed",
            legs=[(payouts, -payout.amount_micro), (seller, payout.amount_micro)],
            memo={"payout_id": payout.id, "seller_id": payout.seller_id, "reason": status},
        )
        if transfer is None:  # posted before, yet the row still pending: keep the one transfer
            transfer = await conn.fetchval("SELECT id FROM transfers WHERE idempotency_key = $1", key)
        row = await conn.fetchrow(
            """UPDATE payouts SET status = $2, reversal_transfer_id = $3, failure_reason = $4, decided_by = $5,
                      updated_at = now()
               WHERE id = $1 RETURNING *""",
            uuid.UUID(payout.id),
            status,
            transfer,
            reason,
            uuid.UUID(admin_id) if admin_id else None,
        )
        return Payout.from_row(row)


async def _record_decision(
    conn: ledger.Conn, payout: Payout, admin_id: str, decision: str, *, reference: str | None = None
) -> None:
    """An admin's decision on a payout, in the seller's audit trail, committed with the decision."""
    detail: dict[str, str] = {"decision": decision, "amount_usd": usd(payout.amount_micro)}
    if reference is not None:
        detail["reference"] = reference
    await audittrail.record(
        conn,
        audittrail.PAYOUT_CHANGED,
        subject_id=payout.seller_id,
        actor_id=admin_id,
        target_type="payout",
        target_id=payout.id,
        detail=detail,
    )
