"""Crediting a buyer outside Stripe: an admin's promotional credit (`/api/admin/credits`, `demo`).

Postgres first, then Redis (DESIGN.md): the transfer commits, and only then does the hot view
learn the new money (`on_balance_change`). If the process dies in between, the buyer's hot view is
low until the reconciler repairs it — never high, so no one can spend money that does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from aichat_gateway import audittrail
from aichat_gateway.billing import ledger
from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.errors import BillingNotFound, Conflict, InvalidBillingInput, LedgerError
from aichat_gateway.billing.reconcile import balance_writes
from aichat_gateway.config.logging import get_logger
from aichat_gateway.emailaddr import canonical_email

log = get_logger(__name__)

MAX_CREDIT_MICRO = 1_000_000 * 1_000_000  # one million USD: a typo guard, not a policy
MAX_REASON_CHARS = 500
# Stripe's own limit; it also keeps the transfers' unique index under Postgres' btree row size.
MAX_IDEMPOTENCY_KEY_CHARS = 255
IDEMPOTENCY_PARAM = "Idempotency-Key"

BalanceHook = Callable[[str, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Credit:
    transfer_id: int
    user_id: str
    amount_micro: int
    balance_micro: int
    replayed: bool = False  # this idempotency key was used before: nothing new was posted


@dataclass(frozen=True, slots=True)
class Grant:
    """What a credit transfer gave: to whom, how much, why."""

    user_id: str
    amount_micro: int
    reason: str


def check_credit(amount_micro: int, reason: object) -> str:
    if amount_micro <= 0:
        raise InvalidBillingInput("amount_usd must be more than zero", param="amount_usd")
    if amount_micro > MAX_CREDIT_MICRO:
        raise InvalidBillingInput("amount_usd is above the 1,000,000 USD limit of one credit", param="amount_usd")
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidBillingInput("reason is required: say why this credit is granted", param="reason")
    text = reason.strip()
    if len(text) > MAX_REASON_CHARS or any(ord(c) < 32 for c in text):
        raise InvalidBillingInput(f"reason must be 1 to {MAX_REASON_CHARS} printable characters", param="reason")
    return text


def check_idempotency_key(key: str | None) -> None:
    if key is None:
        return
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS or not key.isascii() or not key.isprintable():
        raise InvalidBillingInput(
            f"{IDEMPOTENCY_PARAM} must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters",
            param=IDEMPOTENCY_PARAM,
        )


def check_replay(original: Grant, asked: Grant) -> None:
    """A retry repeats its request; the same key with another grant is a mistake that must not look
    like a success (nothing would be posted, yet the answer would show the new amount)."""
    if original != asked:
        raise Conflict(
            f"this {IDEMPOTENCY_PARAM} was used for another credit; use a new key for a new credit",
            param=IDEMPOTENCY_PARAM,
        )


_GRANTED_SQL = """
SELECT t.id, a.owner_id, e.amount_micro, t.memo->>'reason' AS reason
FROM transfers t
JOIN ledger_entries e ON e.transfer_id = t.id
JOIN ledger_accounts a ON a.id = e.account_id AND a.kind = 'buyer'
WHERE t.idempotency_key = $1
"""


async def user_id_for_email(db: asyncpg.Pool, email: object) -> str:
    # The accounts' one e-mail rule: plain ASCII only, compared in its canonical form, so a
    # look-alike ("İ", the Kelvin sign...) that Postgres' lower() would fold onto a real address
    # is refused rather than credited to that account.
    canonical = canonical_email(email)
    if canonical is None:
        raise InvalidBillingInput("email must be the buyer's e-mail address (plain ASCII)", param="email")
    found = await db.fetchval("SELECT id FROM users WHERE lower(email) = $1", canonical)
    if found is None:
        raise BillingNotFound("no account has this e-mail address", param="email")
    return str(found)


async def grant_credit(
    db: asyncpg.Pool,
    *,
    user_id: str,
    amount_micro: int,
    reason: str,
    granted_by: str | None,
    idempotency_key: str | None,
    on_balance_change: BalanceHook,
    ip: str | None = None,
) -> Credit:
    """Promotions → buyer. `idempotency_key` (e.g. the admin's Idempotency-Key header) makes a
    retried grant post once and answer the first one's transfer (another grant under a used key is
    a Conflict); without one, every call is a new credit."""
    reason = check_credit(amount_micro, reason)
    check_idempotency_key(idempotency_key)
    key = f"credit:{granted_by or 'system'}:{idempotency_key or uuid.uuid4().hex}"
    async with balance_writes(db) as conn:  # Postgres, then Redis, with no reconcile in between
        async with conn.transaction():
            buyer = await ledger.account_id(conn, ledger.AccountKind.BUYER, user_id)
            promotions = await ledger.account_id(conn, ledger.AccountKind.PROMOTIONS)
            transfer = await ledger.post(
                conn,
                idempotency_key=key,
                kind="credit",
                legs=[(promotions, -amount_micro), (buyer, amount_micro)],
                memo={"reason": reason, "granted_by": granted_by},
            )
            replayed = transfer is None
            if transfer is None:
                row = await conn.fetchrow(_GRANTED_SQL, key)
                if row is None:  # the key is taken, and only grant_credit posts keys that start "credit:"
                    raise LedgerError(f"transfer {key!r} exists but credits no buyer")
                original = Grant(str(row["owner_id"]), row["amount_micro"], row["reason"])
                check_replay(original, Grant(user_id, amount_micro, reason))
                transfer = int(row["id"])
            elif granted_by is not None:  # an admin's grant is in the buyer's audit trail, with it
                await audittrail.record(
                    conn,
                    audittrail.ADMIN_CREDIT,
                    subject_id=user_id,
                    actor_id=granted_by,
                    target_type="transfer",
                    target_id=str(transfer),
                    ip=ip,
                    detail={"amount_usd": usd(amount_micro), "reason": reason},
                )
            balance = await ledger.balance_micro(conn, ledger.AccountKind.BUYER, user_id)
        if not replayed:
            await on_balance_change(user_id, amount_micro)
            log.info(
                "credit_granted",
                user_id=user_id,
                amount_micro=amount_micro,
                reason=reason,
                granted_by=granted_by,
                transfer_id=transfer,
            )
    return Credit(transfer, user_id, amount_micro, balance, replayed)
