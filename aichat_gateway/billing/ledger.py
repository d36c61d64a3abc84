"""The double-entry ledger: accounts, transfers and their entries, in integer micro-USD.

Sign convention: an account's balance is the sum of its entries, and all balances sum to zero.
A buyer's positive balance is money they can spend; a seller's is money they earned. So:

    top-up X        stripe_clearing -X, buyer +X
    usage cost C    buyer -C, seller +S, platform +F   (S, F = split_charge(C, fee_rate))
    ... beyond hold  buyer -C, platform_exposure -X, seller +S, platform +F   (S, F = split_charge(C + X))
    credit X        promotions -X, buyer +X
    refund R        buyer -R, stripe_clearing +R       (may leave the buyer below zero)
    dispute D       buyer -D, stripe_clearing +D       (dispute won: the reverse)
    payout P        seller -P, payouts +P

Every writer posts through `post`, which is idempotent on a key the writer derives from what it
is settling ('usage:<request id>', a PaymentIntent id, ...), so retries and replays are harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final, TypeAlias
from uuid import UUID

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from aichat_gateway.billing.amounts import parse_usd, usd
from aichat_gateway.billing.errors import LedgerError

__all__ = [
    "TRANSFER_KINDS",
    "AccountKind",
    "Conn",
    "Transfer",
    "account_id",
    "balance_micro",
    "check_legs",
    "lock_accounts",
    "parse_usd",
    "post",
    "post_many",
    "split_charge",
    "usd",
]


# A plain connection or one acquired from a pool: both work wherever a connection is taken.
Conn: TypeAlias = asyncpg.Connection | PoolConnectionProxy


class AccountKind(StrEnum):
    BUYER = "buyer"
    SELLER = "seller"
    PLATFORM = "platform"
    STRIPE_CLEARING = "stripe_clearing"
    PROMOTIONS = "promotions"
    PAYOUTS = "payouts"
    # What providers billed beyond buyers' holds, paid to sellers at the platform's cost (balance <= 0).
    PLATFORM_EXPOSURE = "platform_exposure"


OWNED_KINDS: Final = frozenset({AccountKind.BUYER, AccountKind.SELLER})
TRANSFER_KINDS: Final = frozenset(
    {"topup", "usage", "credit", "refund", "dispute", "dispute_won", "payout", "payout_failed", "adjustment"}
)
_BIGINT_MAX: Final = 2**63 - 1


# --- pure decisions -------------------------------------------------------------------------


def split_charge(cost_micro: int, fee_rate: Decimal) -> tuple[int, int]:
    """A usage cost → (seller_micro, platform_micro), summing exactly to the cost.

    The platform fee is floor(cost * fee_rate), computed exactly (the Decimal rate as a fraction,
    not in a 28-digit context), and the seller gets the rest: rounding favours the seller by less
    than one micro-USD per request. Either part may be 0 — drop zero legs before posting.
    """
    if not isinstance(cost_micro, int) or isinstance(cost_micro, bool) or cost_micro < 0:
        raise LedgerError(f"cost_micro must be a non-negative integer, not {cost_micro!r}")
    if not isinstance(fee_rate, Decimal) or not fee_rate.is_finite() or not 0 <= fee_rate <= 1:
        raise LedgerError(f"fee_rate must be a Decimal between 0 and 1, not {fee_rate!r}")
    numerator, denominator = fee_rate.as_integer_ratio()
    fee = cost_micro * numerator // denominator
    return cost_micro - fee, fee


def check_legs(legs: Sequence[tuple[int, int]]) -> None:
    """Refuse legs that would break a ledger rule: fewer than two, a zero amount, a non-zero sum."""
    if len(legs) < 2:
        raise LedgerError(f"a transfer needs at least 2 legs, got {len(legs)}")
    for leg in legs:
        account, amount = leg
        for value in (account, amount):
            if not isinstance(value, int) or isinstance(value, bool):
                raise LedgerError(f"legs are (account id, micro-USD) integers, got {leg!r}")
        if amount == 0:
            raise LedgerError(f"leg {leg!r} moves nothing (drop zero legs before posting)")
        if abs(amount) > _BIGINT_MAX:
            raise LedgerError(f"leg {leg!r} is out of range")
    total = sum(amount for _, amount in legs)
    if total != 0:
        raise LedgerError(f"legs sum to {total} micro-USD, not 0: {list(legs)!r}")


def entries_after(legs: Sequence[tuple[int, int]], balances: Mapping[int, int]) -> tuple[list[int], dict[int, int]]:
    """Each leg's balance_after (legs applied in order) and each account's final balance."""
    running = dict(balances)
    after: list[int] = []
    for account, amount in legs:
        running[account] += amount
        after.append(running[account])
    return after, running


def _owner(kind: AccountKind, owner_id: UUID | str | None) -> UUID | None:
    if kind in OWNED_KINDS:
        if owner_id is None:
            raise LedgerError(f"a {kind} account needs an owner")
        try:
            return owner_id if isinstance(owner_id, UUID) else UUID(owner_id)
        except ValueError:
            raise LedgerError(f"owner id {owner_id!r} is not a UUID") from None
    if owner_id is not None:
        raise LedgerError(f"the {kind} account is a system account and has no owner")
    return None


def _select(owner: UUID | None, column: str) -> str:
    # Two shapes, not `owner_id IS NOT DISTINCT FROM $2`: that form cannot use the unique index.
    if owner is None:
        return f"SELECT {column} FROM ledger_accounts WHERE kind = $1 AND owner_id IS NULL"  # noqa: S608
    return f"SELECT {column} FROM ledger_accounts WHERE kind = $1 AND owner_id = $2"  # noqa: S608


def _key(kind: AccountKind, owner: UUID | None) -> tuple[Any, ...]:
    return (kind.value,) if owner is None else (kind.value, owner)


# --- I/O ------------------------------------------------------------------------------------


async def account_id(conn: Conn, kind: AccountKind, owner_id: UUID | str | None = None) -> int:
    """The id of the (kind, owner) account, created on first use.

    Never locks an existing account row: a caller may run this inside its transaction before
    `post`, and `post` must be the first to lock, in id order (see `lock_accounts`).
    """
    kind = AccountKind(kind)
    owner = _owner(kind, owner_id)
    found: int | None = await conn.fetchval(_select(owner, "id"), *_key(kind, owner))
    if found is not None:
        return found
    created: int | None = await conn.fetchval(
        """INSERT INTO ledger_accounts (kind, owner_id) VALUES ($1, $2)
           ON CONFLICT (kind, owner_id) DO NOTHING RETURNING id""",
        kind.value,
        owner,
    )
    if created is not None:
        return created
    # Lost a race with another creator, who has committed by now (ON CONFLICT waited for it).
    raced: int = await conn.fetchval(_select(owner, "id"), *_key(kind, owner))
    return raced


async def lock_accounts(conn: Conn, account_ids: Iterable[int]) -> dict[int, int]:
    """Lock accounts in ascending id order (FOR UPDATE) and return their balances.

    One fixed order for every transaction is what keeps concurrent transfers from deadlocking.
    `post` calls this for its own legs; a caller posting several transfers in one transaction
    (a settlement batch) should call it first with every account of the batch, else two batches
    can each hold an account the other needs next.
    """
    if not conn.is_in_transaction():
        raise LedgerError("lock_accounts must run inside a transaction (the locks end with it)")
    wanted = sorted(set(account_ids))
    rows = await conn.fetch(
        "SELECT id, balance_micro FROM ledger_accounts WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", wanted
    )
    balances = {int(row["id"]): int(row["balance_micro"]) for row in rows}
    missing = [i for i in wanted if i not in balances]
    if missing:
        raise LedgerError(f"no ledger account with id {missing}")
    return balances


# Inserts the transfer, and only if the key is new (the CTEs read `t`), its entries and balances.
# The accounts are already locked by this transaction, so these writes cannot interleave.
_POST_SQL = """
WITH t AS (
    INSERT INTO transfers (idempotency_key, kind, memo) VALUES ($1, $2, $3::text::jsonb)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id
), e AS (
    INSERT INTO ledger_entries (transfer_id, account_id, amount_micro, balance_after_micro)
    SELECT t.id, leg.account_id, leg.amount_micro, leg.balance_after_micro
    FROM t, unnest($4::bigint[], $5::bigint[], $6::bigint[]) WITH ORDINALITY
         AS leg(account_id, amount_micro, balance_after_micro, n)
    ORDER BY leg.n
), u AS (
    UPDATE ledger_accounts AS a SET balance_micro = b.balance_micro
    FROM unnest($7::bigint[], $8::bigint[]) AS b(id, balance_micro)
    WHERE a.id = b.id AND EXISTS (SELECT 1 FROM t)
)
SELECT id FROM t
"""


async def post(
    conn: Conn,
    *,
    idempotency_key: str,
    kind: str,
    legs: Sequence[tuple[int, int]],
    memo: Mapping[str, Any] | None = None,
) -> int | None:
    """Post one transfer inside the caller's transaction; its id, or None if the key was used.

    legs are (account id, signed micro-USD): non-zero, at least two, summing to zero; several
    legs on one account are applied in order. A replayed key changes nothing and returns None —
    even if its legs differ (the first post is the truth). Broken rules raise LedgerError before
    anything is written.
    """
    if not conn.is_in_transaction():
        raise LedgerError("post must run inside a transaction the caller opened")
    if not isinstance(idempotency_key, str) or not idempotency_key:
        raise LedgerError("a transfer needs a non-empty idempotency key")
    if kind not in TRANSFER_KINDS:
        raise LedgerError(f"unknown transfer kind {kind!r}")
    check_legs(legs)
    memo_json = orjson.dumps(dict(memo) if memo is not None else {}).decode()
    balances = await lock_accounts(conn, (account for account, _ in legs))
    after, final = entries_after(legs, balances)
    if any(abs(value) > _BIGINT_MAX for value in final.values()) or any(abs(v) > _BIGINT_MAX for v in after):
        raise LedgerError("a balance would leave the bigint range")
    changed = [account for account in final if final[account] != balances[account]]
    transfer: int | None = await conn.fetchval(
        _POST_SQL,
        idempotency_key,
        kind,
        memo_json,
        [account for account, _ in legs],
        [amount for _, amount in legs],
        after,
        changed,
        [final[account] for account in changed],
    )
    return transfer


@dataclass(frozen=True, slots=True)
class Transfer:
    """One transfer for `post_many`: the same fields `post` takes."""

    idempotency_key: str
    kind: str
    legs: Sequence[tuple[int, int]]
    memo: Mapping[str, Any] | None = None


# Every new transfer of a `post_many` call, its entries and the final balances, in one statement.
# Entries are inserted in the order their balance_after was computed (ORDER BY n), so the running
# balance by entry id holds, as for `post`.
_POST_MANY_SQL = """
WITH t AS (
    INSERT INTO transfers (idempotency_key, kind, memo)
    SELECT x.key, x.kind, x.memo::jsonb
    FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS x(key, kind, memo, n)
    ORDER BY x.n
    RETURNING id, idempotency_key
), e AS (
    INSERT INTO ledger_entries (transfer_id, account_id, amount_micro, balance_after_micro)
    SELECT t.id, leg.account_id, leg.amount_micro, leg.balance_after_micro
    FROM unnest($4::text[], $5::bigint[], $6::bigint[], $7::bigint[]) WITH ORDINALITY
         AS leg(key, account_id, amount_micro, balance_after_micro, n)
    JOIN t ON t.idempotency_key = leg.key
    ORDER BY leg.n
), u AS (
    UPDATE ledger_accounts AS a SET balance_micro = b.balance_micro
    FROM unnest($8::bigint[], $9::bigint[]) AS b(id, balance_micro)
    WHERE a.id = b.id
)
SELECT id, idempotency_key FROM t
"""


async def post_many(conn: Conn, transfers: Sequence[Transfer]) -> list[int | None]:
    """`post` for many transfers at once: the same result as posting them in order, in three round
    trips instead of two per transfer (the settlement worker posts hundreds per batch).

    Returns each transfer's id, or None for a key used before this call. Keys must be distinct
    within a call. A key posted by a concurrent transaction after the check fails the statement
    (unique violation) instead of being skipped: roll back and retry.
    """
    if not conn.is_in_transaction():
        raise LedgerError("post_many must run inside a transaction the caller opened")
    keys = [t.idempotency_key for t in transfers]
    if len(set(keys)) != len(keys):
        raise LedgerError("post_many needs distinct idempotency keys")
    for t in transfers:
        if not isinstance(t.idempotency_key, str) or not t.idempotency_key:
            raise LedgerError("a transfer needs a non-empty idempotency key")
        if t.kind not in TRANSFER_KINDS:
            raise LedgerError(f"unknown transfer kind {t.kind!r}")
        check_legs(t.legs)
    if not transfers:
        return []
    balances = await lock_accounts(conn, (account for t in transfers for account, _ in t.legs))
    used = {r["idempotency_key"] for r in await conn.fetch(_USED_KEYS_SQL, keys)}
    fresh = [t for t in transfers if t.idempotency_key not in used]
    running = dict(balances)
    leg_keys: list[str] = []
    leg_accounts: list[int] = []
    leg_amounts: list[int] = []
    leg_after: list[int] = []
    for t in fresh:
        after, running = entries_after(t.legs, running)
        for (account, amount), balance in zip(t.legs, after, strict=True):
            leg_keys.append(t.idempotency_key)
            leg_accounts.append(account)
            leg_amounts.append(amount)
            leg_after.append(balance)
    if any(abs(v) > _BIGINT_MAX for v in leg_after):
        raise LedgerError("a balance would leave the bigint range")
    if not fresh:
        return [None] * len(keys)
    changed = [account for account in running if running[account] != balances[account]]
    rows = await conn.fetch(
        _POST_MANY_SQL,
        [t.idempotency_key for t in fresh],
        [t.kind for t in fresh],
        [orjson.dumps(dict(t.memo) if t.memo is not None else {}).decode() for t in fresh],
        leg_keys,
        leg_accounts,
        leg_amounts,
        leg_after,
        changed,
        [running[account] for account in changed],
    )
    ids = {r["idempotency_key"]: int(r["id"]) for r in rows}
    return [ids.get(key) for key in keys]


_USED_KEYS_SQL = "SELECT idempotency_key FROM transfers WHERE idempotency_key = ANY($1::text[])"


async def balance_micro(conn: Conn, kind: AccountKind, owner_id: UUID | str | None = None) -> int:
    """The stored balance of the (kind, owner) account; 0 if it was never created."""
    kind = AccountKind(kind)
    owner = _owner(kind, owner_id)
    value: int | None = await conn.fetchval(_select(owner, "balance_micro"), *_key(kind, owner))
    return int(value) if value is not None else 0
