"""The ledger against an in-memory model: random sequences of money movements on a real Postgres.

hypothesis drives sync rules, so the machine owns a private event loop and runs each database
call to completion on it. One database serves the whole test; every example starts by
truncating the ledger, so the model (which starts empty) can be compared with every account.
After each step the database balances must equal the model's and the audit must find nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.ledger import AccountKind, account_id, post, split_charge
from tests.support.scratch import migrated_database

pytestmark = pytest.mark.timeout(300)

T = TypeVar("T")
FEE = Decimal("0.10")
# Small amounts hit rounding (a fee that floors to 0), large ones the bigint-scale arithmetic.
AMOUNTS = st.one_of(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=10**12))
# Percent of what is available: above 100 asks for more than there is.
SHARES = st.integers(min_value=1, max_value=120)
Account = tuple[AccountKind, uuid.UUID | None]


class LedgerMachine(RuleBasedStateMachine):
    buyers = Bundle("buyers")
    sellers = Bundle("sellers")
    keys = Bundle("keys")

    def __init__(self, dsn: str) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.run(asyncpg.connect(dsn))
        # CASCADE: later migrations add tables pointing at these (Stripe top-ups, ...).
        self.run(self.conn.execute("TRUNCATE usage_records, ledger_entries, transfers, ledger_accounts, users CASCADE"))
        self.model: dict[Account, int] = {}
        self.ids: dict[Account, int] = {}
        self.serial = 0

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(work)

    def teardown(self) -> None:
        try:
            self.run(self.conn.close())
        finally:
            self.loop.close()

    # --- helpers -------------------------------------------------------------------------

    def account(self, kind: AccountKind, owner: uuid.UUID | None = None) -> int:
        if (kind, owner) not in self.ids:
            self.ids[(kind, owner)] = self.run(account_id(self.conn, kind, owner))
        return self.ids[(kind, owner)]

    def key(self, kind: str) -> str:
        self.serial += 1
        return f"{kind}:{self.serial}:{uuid.uuid4().hex[:8]}"

    def transfer(
        self, kind: str, legs: list[tuple[Account, int]], *, usage: tuple[str, int, uuid.UUID] | None = None
    ) -> str:
        """Post legs (dropping zero ones) and mirror them in the model; returns the key used."""
        key = f"usage:{usage[0]}" if usage else self.key(kind)
        moves = [(self.account(*who), amount) for who, amount in legs if amount != 0]

        async def work() -> int | None:
            async with self.conn.transaction():
                transfer = await post(self.conn, idempotency_key=key, kind=kind, legs=moves)
                if usage is not None:
                    request_id, held, seller = usage
                    cost = -legs[0][1]
                    await self.conn.execute(
                        """INSERT INTO usage_records (request_id, buyer_id, seller_id, cost_micro, held_micro,
                                                      fee_micro, created_at, transfer_id)
                           VALUES ($1, $2, $3, $4, $5, $6, now(), $7)""",
                        request_id,
                        legs[0][0][1],
                        seller,
                        cost,
                        held,
                        legs[2][1],
                        transfer,
                    )
                return transfer

        assert self.run(work()) is not None
        for who, amount in legs:
            self.model[who] = self.model.get(who, 0) + amount
        return key

    def balance(self, kind: AccountKind, owner: uuid.UUID | None = None) -> int:
        return self.model.get((kind, owner), 0)

    # --- rules ---------------------------------------------------------------------------

    @initialize(target=buyers)
    def first_buyer(self) -> uuid.UUID:
        return self.new_user()

    @initialize(target=sellers)
    def first_seller(self) -> uuid.UUID:
        return self.new_user()

    @rule(target=buyers)
    def another_buyer(self) -> uuid.UUID:
        return self.new_user()

    def new_user(self) -> uuid.UUID:
        user: uuid.UUID = self.run(
            self.conn.fetchval(
                "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id",
                f"{uuid.uuid4().hex}@example.com",
            )
        )
        return user

    @rule(target=keys, buyer=buyers, amount=AMOUNTS)
    def top_up(self, buyer: uuid.UUID, amount: int) -> str:
        return self.transfer(
            "topup", [((AccountKind.STRIPE_CLEARING, None), -amount), ((AccountKind.BUYER, buyer), amount)]
        )

    @rule(target=keys, buyer=buyers, amount=AMOUNTS)
    def credit(self, buyer: uuid.UUID, amount: int) -> str:
        return self.transfer(
            "credit", [((AccountKind.PROMOTIONS, None), -amount), ((AccountKind.BUYER, buyer), amount)]
        )

    @rule(target=keys, buyer=buyers, share=SHARES)
    def refund(self, buyer: uuid.UUID, share: int) -> str:
        # May take the buyer below zero: a refund is Stripe's fact, not a request we admit.
        amount = max(1, self.balance(AccountKind.BUYER, buyer) * share // 100)
        return self.transfer(
            "refund", [((AccountKind.BUYER, buyer), -amount), ((AccountKind.STRIPE_CLEARING, None), amount)]
        )

    @rule(
        target=keys,
        buyer=buyers,
        seller=sellers,
        share=SHARES,
        slack=st.integers(min_value=0, max_value=1_000),
    )
    def charge_usage(self, buyer: uuid.UUID, seller: uuid.UUID, share: int, slack: int) -> Any:
        available = self.balance(AccountKind.BUYER, buyer)
        amount = max(1, available * share // 100)
        # What the Redis hold guarantees in production: nothing is admitted beyond the balance.
        if amount > available:
            return multiple()
        seller_part, fee = split_charge(amount, FEE)
        legs = [
            ((AccountKind.BUYER, buyer), -amount),
            ((AccountKind.SELLER, seller), seller_part),
            ((AccountKind.PLATFORM, None), fee),
        ]
        return self.transfer("usage", legs, usage=(f"req-{uuid.uuid4()}", amount + slack, seller))

    @rule(target=keys, seller=sellers, share=st.integers(min_value=1, max_value=100))
    def payout(self, seller: uuid.UUID, share: int) -> Any:
        earned = self.balance(AccountKind.SELLER, seller)
        amount = earned * share // 100
        if amount <= 0:
            return multiple()
        return self.transfer("payout", [((AccountKind.SELLER, seller), -amount), ((AccountKind.PAYOUTS, None), amount)])

    @rule(key=keys, buyer=buyers, amount=AMOUNTS)
    def replay(self, key: str, buyer: uuid.UUID, amount: int) -> None:
        legs = [(self.account(AccountKind.PROMOTIONS), -amount), (self.account(AccountKind.BUYER, buyer), amount)]

        async def work() -> int | None:
            async with self.conn.transaction():
                return await post(self.conn, idempotency_key=key, kind="credit", legs=legs)

        assert self.run(work()) is None

    # --- after every step ----------------------------------------------------------------

    @invariant()
    def database_balances_equal_the_model(self) -> None:
        rows = self.run(self.conn.fetch("SELECT kind, owner_id, balance_micro FROM ledger_accounts"))
        stored = {(AccountKind(r["kind"]), r["owner_id"]): r["balance_micro"] for r in rows}
        assert stored == {who: self.model.get(who, 0) for who in stored}
        assert all(who in stored for who, amount in self.model.items() if amount != 0)

    @invariant()
    def the_audit_finds_nothing(self) -> None:
        assert self.run(audit(self.conn)) == []


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database("stateful") as url:
        yield url


def test_random_money_movements_keep_the_ledger_equal_to_the_model_and_sound(dsn: str) -> None:
    run_state_machine_as_test(
        lambda: LedgerMachine(dsn),
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
