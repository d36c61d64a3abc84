"""The money system against an in-memory model: holds, settlement and the ledger on real Postgres and Redis.

Each example plays random sequences of what happens to money around `/v1` requests, minus HTTP:
Stripe top-ups and refunds, requests (hold, then usage event and settle in one pipeline, as
`proxy/chat.py` ends a request; two at once; one whose hold is swept before it finishes),
redelivered events, the settlement worker draining the stream, seller payouts, the reconciler,
and a process dying between its Postgres commit and its Redis update. The model knows what every
ledger account must hold and which charges still wait in the stream, so after every step Postgres
must equal it, each loaded hot view must equal "settled balance minus unsettled charges" with no
hold left open, and the audit must find nothing.

Two bugs this machine found (the audit calling a refund-then-settle an overdraw; a swept hold's
charge taken off the hot balance ahead of Postgres) are fixed; the two tests at the end replay them.
The `sidestep_*` switches, off by default, remain for bisecting.

hypothesis drives sync rules, so the test owns one event loop (and the pool and Redis client bound
to it) and every rule runs its I/O to completion on it. One database serves the whole test and
each example starts by emptying the ledger, so the model (which starts empty) can be compared with
every account and the audit sees this example alone; each example also gets fresh users, a fresh
Redis prefix (its own stream, consumer group and hot views) and its own settlement worker, whose
account-id cache must not outlive the ledger it cached.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import asyncpg
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio import Redis

from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.holdplan import NOT_OPEN
from aichat_gateway.billing.holds import HoldStatus, HotBalances
from aichat_gateway.billing.ledger import AccountKind, account_id, balance_micro, post, split_charge
from aichat_gateway.billing.meter import Meter, UsageEvent
from aichat_gateway.billing.reconcile import Reconciler, balance_writes
from aichat_gateway.billing.settle import Settler
from aichat_gateway.config.settings import Settings
from tests.support.scratch import TEST_REDIS_URL, migrated_database, redis_prefix

# Generous: a passing run takes seconds, but a failing one shrinks for up to hypothesis' five minutes,
# and a timeout inside that would be reported as a flaky failure instead of the minimal example.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

T = TypeVar("T")
Account = tuple[AccountKind, str | None]

# The fee a deployment charges unless GATEWAY_PLATFORM_FEE says otherwise.
FEE: Final = Settings.model_fields["platform_fee"].default
NOW: Final = 1_717_200_000.0  # where every example's clock starts; only a stalled request moves it
HOLD_TTL_S: Final = 60.0
BUYERS: Final = 3
SELLERS: Final = 2
# Small amounts hit rounding (a fee that floors to 0), large ones the bigint-scale arithmetic.
AMOUNTS = st.one_of(st.integers(min_value=1, max_value=100), st.integers(min_value=1, max_value=10**12))
PERCENT = st.integers(min_value=0, max_value=100)
BUYER = st.integers(min_value=0, max_value=BUYERS - 1)
SELLER = st.integers(min_value=0, max_value=SELLERS - 1)


@dataclass(frozen=True, slots=True)
class Ask:
    """A request's worst case, as a share of what the buyer has available, give or take a micro-USD."""

    share: int
    nudge: int


@dataclass(frozen=True, slots=True)
class Answer:
    """How an admitted request ends: ok (charged its actual cost, a share of the worst case), failed
    (nothing) or cut (a share of the actual cost)."""

    outcome: str
    actual_share: int
    cut_share: int
    finishes_first: bool  # in overlapping requests: the second one finishes before the first


ASK = st.builds(Ask, share=st.integers(min_value=0, max_value=130), nudge=st.integers(min_value=-1, max_value=1))
ANSWER = st.builds(
    Answer,
    outcome=st.sampled_from(["ok", "failed", "cut"]),
    actual_share=PERCENT,
    cut_share=PERCENT,
    finishes_first=st.booleans(),
)


@dataclass(frozen=True, slots=True)
class Opened:
    """An admitted request whose hold is open."""

    buyer: str
    request_id: str
    worst_case: int


@dataclass(frozen=True, slots=True)
class Rig:
    """What outlives one example: the loop and the connections bound to it."""

    loop: asyncio.AbstractEventLoop
    db: asyncpg.Pool
    redis: Redis


@dataclass(frozen=True, slots=True)
class Recorded:
    """A usage event the model expects the worker to settle."""

    event: UsageEvent
    buyer: str
    seller: str | None
    # Its hold was swept before it finished, so the gateway took the charge off the hot balance
    # itself (chat._settled) instead of leaving it unsettled for the worker's `applied`.
    charged_ahead: bool = False


@dataclass
class Model:
    """What the money must come to: ledger balances and the charges still in the stream."""

    ledger: dict[Account, int] = field(default_factory=dict)
    unsettled: list[Recorded] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)  # buyer -> open holds, within one rule
    stored: int = 0  # usage rows the settled events made (requests, also refused ones)
    in_stream: int = 0  # entries the next drain will read: events plus redeliveries

    def balance(self, who: Account) -> int:
        return self.ledger.get(who, 0)

    def move(self, legs: list[tuple[Account, int]]) -> None:
        for who, amount in legs:
            self.ledger[who] = self.ledger.get(who, 0) + amount

    def waiting(self, buyer: str) -> bool:
        """Whether the buyer has charges the worker has not settled yet."""
        return any(r.buyer == buyer and r.event.cost_micro > 0 for r in self.unsettled)

    def charged_ahead(self, buyer: str) -> int:
        """Charges the hot view's balance already counts though Postgres does not yet."""
        return sum(r.event.cost_micro for r in self.unsettled if r.buyer == buyer and r.charged_ahead)

    def effective(self, buyer: str) -> int:
        """The buyer's balance once every finished request is settled (what a hold is checked against)."""
        waiting = sum(r.event.cost_micro for r in self.unsettled if r.buyer == buyer)
        return self.balance((AccountKind.BUYER, buyer)) - waiting

    def settle_all(self) -> None:
        for recorded in self.unsettled:
            cost = recorded.event.cost_micro
            if cost == 0:
                continue
            assert recorded.seller is not None
            seller_part, fee = split_charge(cost, FEE)
            self.move(
                [
                    ((AccountKind.BUYER, recorded.buyer), -cost),
                    ((AccountKind.SELLER, recorded.seller), seller_part),
                    ((AccountKind.PLATFORM, None), fee),
                ]
            )
        self.stored += len(self.unsettled)
        self.unsettled.clear()
        self.in_stream = 0


def note(what: str) -> None:
    """hypothesis' `event` (how often each path ran), also when a test replays steps by hand."""
    if currently_in_test_context():
        event(what)


def cost_of(answer: Answer, worst_case: int) -> int:
    """What a finished request is charged: never above its hold, nothing when it failed."""
    actual = worst_case * answer.actual_share // 100
    if answer.outcome == "ok":
        return actual
    if answer.outcome == "cut":  # the client went away mid-answer: charged for the part it got
        return actual * answer.cut_share // 100
    return 0


class MoneyMachine(RuleBasedStateMachine):
    def __init__(self, rig: Rig, *, sidestep_audit_bug: bool = False, sidestep_reconcile_bug: bool = False) -> None:
        super().__init__()
        self.rig = rig
        # Switches to step around the two (fixed) bugs the tests at the end replay; off by default.
        self.sidestep_audit_bug = sidestep_audit_bug
        self.sidestep_reconcile_bug = sidestep_reconcile_bug
        self.cleanup = contextlib.ExitStack()
        self.prefix = self.cleanup.enter_context(redis_prefix("msm"))
        self.now = NOW  # every clock of the example (hot balances, worker): tests never sleep
        clock = lambda: self.now  # noqa: E731
        self.hot = HotBalances(rig.redis, self.prefix, clock=clock)
        self.meter = Meter(rig.redis, self.prefix)
        self.settler = Settler(
            rig.db,
            rig.redis,
            self.prefix,
            FEE,
            after_commit=self.hot.applied,
            consumer="stateful",
            block_ms=1,
            clock=clock,
        )
        self.reconciler = Reconciler(rig.db, rig.redis, self.prefix, self.hot)
        self.model = Model()
        self.buyers: list[str] = []
        self.sellers: list[str] = []
        self.keys: dict[str, str] = {}  # buyer -> the gateway key their requests come with
        self.loaded: set[str] = set()  # buyers whose hot view exists
        self.refunded: set[str] = set()  # buyers a refund may have taken below zero
        self.refundable: dict[str, int] = {}  # buyer -> topped up and not refunded yet
        self.recorded: list[UsageEvent] = []
        self.serial = 0

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return self.rig.loop.run_until_complete(work)

    def teardown(self) -> None:
        self.cleanup.close()

    # --- helpers -----------------------------------------------------------------------------

    def next_id(self, kind: str) -> str:
        self.serial += 1
        return f"{kind}-{self.serial}-{uuid.uuid4().hex[:8]}"

    async def new_user(self) -> str:
        user: uuid.UUID = await self.rig.db.fetchval(
            "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", f"{uuid.uuid4().hex}@example.com"
        )
        return str(user)

    async def post_buyer_change(self, kind: str, buyer: str, delta: int, other: AccountKind, *, tell: bool) -> None:
        """buyer += delta against `other`, committed under the balance writers' lock; then, unless
        the process "dies" first (tell=False), the hot view hears of it, as webhooks.py does."""
        async with balance_writes(self.rig.db) as conn:
            async with conn.transaction():
                wallet = await account_id(conn, AccountKind.BUYER, buyer)
                counter = await account_id(conn, other)
                transfer = await post(
                    conn, idempotency_key=self.next_id(kind), kind=kind, legs=[(counter, -delta), (wallet, delta)]
                )
                assert transfer is not None
            if tell:
                await self.hot.credit(buyer, delta)

    def buyer_change(self, kind: str, buyer: str, delta: int, other: AccountKind, *, tell: bool = True) -> None:
        self.run(self.post_buyer_change(kind, buyer, delta, other, tell=tell))
        self.model.move([((AccountKind.BUYER, buyer), delta), ((other, None), -delta)])

    def usage_event(
        self, buyer: str, request_id: str, *, seller: str | None, outcome: str, cost: int, held: int
    ) -> UsageEvent:
        return UsageEvent(
            request_id=request_id,
            key_id=self.keys[buyer],
            user_id=buyer,
            listing_id=str(uuid.uuid5(uuid.NAMESPACE_URL, seller)) if seller else "",
            model="gpt-4o-mini",
            prompt_tokens=12,
            completion_tokens=34 if cost else 0,
            usage_source="upstream",
            latency_ms=100,
            ttft_ms=20 if seller else -1,
            outcome=outcome,
            status={"ok": 200, "client_disconnected": 200, "upstream_error": 502}.get(outcome, 402),
            attempts=1 if seller else 0,
            stream=outcome == "client_disconnected",
            ts_ms=int(self.now * 1000),
            seller_id=seller or "",
            cost_micro=cost,
            held_micro=held,
        )

    async def take_hold(self, buyer: str, request_id: str, amount: int) -> tuple[HoldStatus, int, bool]:
        """As proxy/charging.py: hold; if the view is cold, load it from Postgres and hold again.
        Returns (status, available, whether the first answer was COLD)."""
        first = await self.hot.hold(
            buyer_id=buyer, request_id=request_id, amount_micro=amount, key_id=self.keys[buyer], ttl_s=HOLD_TTL_S
        )
        if first.status is not HoldStatus.COLD:
            return first.status, first.available_micro, False
        async with self.rig.db.acquire() as conn:
            balance = await balance_micro(conn, AccountKind.BUYER, buyer)
        await self.hot.load(buyer, balance)
        again = await self.hot.hold(
            buyer_id=buyer, request_id=request_id, amount_micro=amount, key_id=self.keys[buyer], ttl_s=HOLD_TTL_S
        )
        return again.status, again.available_micro, True

    async def finish(self, usage: UsageEvent, *, settle: bool) -> int | None:
        """As chat._finish: the usage event and the hold's settle in one pipeline."""
        async with self.rig.redis.pipeline(transaction=False) as pipe:
            self.meter.record_in(pipe, usage)
            settled = (
                self.hot.settle_in(
                    pipe,
                    buyer_id=usage.user_id,
                    request_id=usage.request_id,
                    cost_micro=usage.cost_micro,
                    late_cap_micro=usage.held_micro,
                )
                if settle
                else None
            )
            results = await pipe.execute(raise_on_error=False)
        assert not isinstance(results[0], BaseException), results[0]
        return None if settled is None else await settled.resolve(results)

    async def drain(self, expected: int) -> None:
        """Settle batches until the `expected` entries are handled, then check none is left.

        Not "until a batch comes back empty": an empty read blocks, and Redis ends a block only on
        its next timer tick (up to 100 ms), which would make every settle step that slow."""
        handled = 0
        while handled < expected:
            n = await self.settler.run_once()
            assert n > 0, f"the worker found nothing more after {handled} of {expected} entries"
            handled += n
        assert handled == expected
        assert await self.settler.backlog() == 0

    # --- rules -------------------------------------------------------------------------------

    @initialize(funds=st.lists(st.one_of(st.just(0), AMOUNTS), min_size=BUYERS, max_size=BUYERS))
    def people(self, funds: list[int]) -> None:
        """Fresh buyers and sellers; some buyers start with a top-up, some with nothing."""

        async def setup() -> None:
            # Only this machine writes here, so plain DELETEs of the few rows an example made are
            # enough (a TRUNCATE costs more than a whole example). Users are never deleted: fresh
            # ones per example.
            await self.rig.db.execute(
                "DELETE FROM usage_records; DELETE FROM ledger_entries; DELETE FROM transfers;"
                " DELETE FROM ledger_accounts;"
            )
            self.buyers = [await self.new_user() for _ in range(BUYERS)]
            self.sellers = [await self.new_user() for _ in range(SELLERS)]

        self.run(setup())
        self.keys = {buyer: str(uuid.uuid4()) for buyer in self.buyers}
        for buyer, amount in zip(self.buyers, funds, strict=True):
            if amount:
                self.stripe_top_up(buyer, amount)

    @rule(buyer=BUYER, amount=AMOUNTS)
    def top_up(self, buyer: int, amount: int) -> None:
        self.stripe_top_up(self.buyers[buyer], amount)

    def stripe_top_up(self, buyer: str, amount: int) -> None:
        self.buyer_change("topup", buyer, amount, AccountKind.STRIPE_CLEARING)
        self.refundable[buyer] = self.refundable.get(buyer, 0) + amount

    @rule(buyer=BUYER, seller=SELLER, ask=ASK, answer=ANSWER)
    def request(self, buyer: int, seller: int, ask: Ask, answer: Answer) -> None:
        opened = self.open_request(self.buyers[buyer], ask)
        if opened is not None:
            self.close_request(opened, self.sellers[seller], answer)

    @rule(buyer=BUYER, sellers=st.tuples(SELLER, SELLER), asks=st.tuples(ASK, ASK), answers=st.tuples(ANSWER, ANSWER))
    def overlapping_requests(
        self, buyer: int, sellers: tuple[int, int], asks: tuple[Ask, Ask], answers: tuple[Answer, Answer]
    ) -> None:
        """Two requests of one buyer in flight at once: the second is admitted against what the
        first left, and they may finish in either order."""
        who = self.buyers[buyer]
        first = self.open_request(who, asks[0])
        second = self.open_request(who, asks[1])
        opened = [(o, s, a) for o, s, a in zip((first, second), sellers, answers, strict=True) if o is not None]
        if len(opened) == 2:
            note("two holds open at once")
            if answers[1].finishes_first:
                opened.reverse()
        for each, seller, answer in opened:
            self.close_request(each, self.sellers[seller], answer)

    @rule(buyer=BUYER, seller=SELLER, ask=ASK, answer=ANSWER)
    def stalled_request(self, buyer: int, seller: int, ask: Ask, answer: Answer) -> None:
        """A process stalls past its hold's ttl: the sweeper voids the hold, then the request
        finishes after all. Its charge still stands (the event carries it to Postgres)."""
        opened = self.open_request(self.buyers[buyer], ask)
        if opened is None:
            return
        note("hold swept before its request finished")
        self.now += HOLD_TTL_S + 1
        assert self.run(self.hot.sweep()) == 1
        self.model.held[opened.buyer] -= opened.worst_case
        self.close_request(opened, self.sellers[seller], answer, swept=True)

    def open_request(self, buyer: str, ask: Ask) -> Opened | None:
        """Hold the worst case; a refused request ends here (its event records no charge)."""
        before = self.model.effective(buyer) - self.model.held.get(buyer, 0)
        # Around what is available: exactly it, a micro-USD either side, far below, far above.
        worst_case = max(0, max(before, 0) * ask.share // 100 + ask.nudge)
        request_id = self.next_id("req")
        status, available, was_cold = self.run(self.take_hold(buyer, request_id, worst_case))
        assert was_cold == (buyer not in self.loaded)
        self.loaded.add(buyer)
        if worst_case > before:
            note("request refused")
            assert (status, available) == (HoldStatus.SHORT, before)
            refused = self.usage_event(buyer, request_id, seller=None, outcome="insufficient_quota", cost=0, held=0)
            assert self.run(self.finish(refused, settle=False)) is None
            self.record(refused, buyer, None)
            return None
        assert (status, available) == (HoldStatus.OK, before - worst_case)
        self.model.held[buyer] = self.model.held.get(buyer, 0) + worst_case
        return Opened(buyer, request_id, worst_case)

    def close_request(self, opened: Opened, seller: str, answer: Answer, *, swept: bool = False) -> None:
        """End an admitted request as chat._finish does: event and settle in one pipeline (and if
        the hold was swept meanwhile, the charge taken off the hot balance, as chat._settled does)."""
        note(f"request {answer.outcome}")
        before = self.model.effective(opened.buyer)
        cost = cost_of(answer, opened.worst_case)
        name = {"ok": "ok", "failed": "upstream_error", "cut": "client_disconnected"}[answer.outcome]
        served = seller if answer.outcome != "failed" else None
        usage = self.usage_event(
            opened.buyer, opened.request_id, seller=served, outcome=name, cost=cost, held=opened.worst_case
        )
        if swept:  # the settle charges it late, as an unsettled charge (hold_settle.lua's late cap)
            assert self.run(self.finish(usage, settle=True)) == (cost if cost > 0 else NOT_OPEN)
        else:
            assert self.run(self.finish(usage, settle=True)) == cost
            self.model.held[opened.buyer] -= opened.worst_case
        self.record(usage, opened.buyer, served, charged_ahead=False)  # a late charge is unsettled, like any
        assert self.model.effective(opened.buyer) >= min(0, before), "usage took the buyer below zero"

    def record(self, usage: UsageEvent, buyer: str, seller: str | None, *, charged_ahead: bool = False) -> None:
        self.model.unsettled.append(Recorded(usage, buyer, seller, charged_ahead))
        self.model.in_stream += 1
        self.recorded.append(usage)

    @precondition(lambda self: bool(self.recorded))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """The same event appended again (a retried pipeline, a consumer that died before its ack):
        it must be stored and charged once."""
        usage = data.draw(st.sampled_from(self.recorded), label="event")
        note("redelivery")

        async def append() -> None:
            async with self.rig.redis.pipeline(transaction=False) as pipe:
                self.meter.record_in(pipe, usage)
                await pipe.execute()

        self.run(append())
        self.model.in_stream += 1

    @rule()
    def settle(self) -> None:
        note("settle" if self.model.in_stream else "settle (nothing waiting)")
        self.run(self.drain(self.model.in_stream))
        self.model.settle_all()

    @rule(buyer=BUYER, share=st.one_of(st.just(100), st.integers(min_value=1, max_value=100)))
    def refund(self, buyer: int, share: int) -> None:
        """Stripe refunds part of the buyer's top-ups: a fact, not a request we admit, so it may take
        the buyer below zero if the money was spent (settled or not)."""
        who = self.buyers[buyer]
        refundable = self.refundable.get(who, 0)
        if refundable == 0:
            note("refund (nothing topped up)")
            return
        amount = max(1, refundable * share // 100)
        below_zero = amount > self.model.effective(who)
        if below_zero and self.sidestep_audit_bug and self.model.waiting(who):
            # See test_a_refund_before_its_charges_settle_is_not_a_usage_overdraw: the settlement
            # worker catches up first, so the known false alarm cannot hide new breaches.
            note("refund below zero waits for settlement")
            self.settle()
        note("refund below zero" if below_zero else "refund")
        self.buyer_change("refund", who, -amount, AccountKind.STRIPE_CLEARING)
        self.refundable[who] -= amount
        self.refunded.add(who)

    @rule(seller=SELLER, share=st.integers(min_value=1, max_value=100))
    def payout(self, seller: int, share: int) -> None:
        """Part of what the seller earned (settled, not paid yet) goes out. Payouts run long after
        the requests, so when nothing is settled yet but charges wait, the worker runs first."""
        who = self.sellers[seller]
        if self.model.balance((AccountKind.SELLER, who)) == 0 and self.model.in_stream:
            note("payout waits for settlement")
            self.settle()
        earned = self.model.balance((AccountKind.SELLER, who))
        amount = max(1, earned * share // 100) if earned > 0 else 0
        if amount == 0:
            note("payout (nothing earned)")
            return
        note("payout")

        async def pay() -> None:
            async with self.rig.db.acquire() as conn, conn.transaction():
                earnings = await account_id(conn, AccountKind.SELLER, who)
                payouts = await account_id(conn, AccountKind.PAYOUTS)
                legs = [(earnings, -amount), (payouts, amount)]
                assert await post(conn, idempotency_key=self.next_id("payout"), kind="payout", legs=legs) is not None

        self.run(pay())
        self.model.move([((AccountKind.SELLER, who), -amount), ((AccountKind.PAYOUTS, None), amount)])

    @rule(buyer=BUYER, amount=AMOUNTS)
    def crash_between_commit_and_redis(self, buyer: int, amount: int) -> None:
        """A credit commits and its process dies before telling Redis: the reconciler must put the
        view right (and only that view, only its balance). A cold view needs nothing: its load reads
        Postgres."""
        who = self.buyers[buyer]
        self.settle_charges_taken_ahead()
        old = self.model.balance((AccountKind.BUYER, who))
        self.buyer_change("credit", who, amount, AccountKind.PROMOTIONS, tell=False)
        repairs = self.run(self.reconciler.run_once())
        if who not in self.loaded:
            note("crash before Redis (cold view)")
            assert repairs == []
            return
        note("crash before Redis (view repaired)")
        assert [(r.buyer_id, r.changes(), r.key_holds_fixed) for r in repairs] == [
            (who, {"balance_micro": (old, old + amount)}, False)
        ]

    @rule()
    def reconcile(self) -> None:
        self.settle_charges_taken_ahead()
        note("reconcile with charges unsettled" if self.model.unsettled else "reconcile")
        assert self.run(self.reconciler.run_once()) == []

    def settle_charges_taken_ahead(self) -> None:
        """See test_a_reconcile_after_a_swept_hold_does_not_let_the_buyer_spend_its_charge_again: a
        charge taken off the hot balance ahead of Postgres must be settled before the reconciler runs."""
        if self.sidestep_reconcile_bug and any(r.charged_ahead for r in self.model.unsettled):
            note("reconcile waits for settlement")
            self.settle()

    # --- after every step --------------------------------------------------------------------

    @invariant()
    def postgres_balances_equal_the_model(self) -> None:
        if not self.buyers:
            return
        rows = self.run(self.rig.db.fetch("SELECT kind, owner_id, balance_micro FROM ledger_accounts"))
        stored = {
            (AccountKind(r["kind"]), str(r["owner_id"]) if r["owner_id"] else None): int(r["balance_micro"])
            for r in rows
        }
        assert stored == {who: self.model.balance(who) for who in stored}
        assert all(who in stored for who, amount in self.model.ledger.items() if amount != 0)
        assert sum(stored.values()) == 0

    @invariant()
    def every_settled_request_is_one_usage_row(self) -> None:
        if self.buyers:
            assert self.run(self.rig.db.fetchval("SELECT count(*) FROM usage_records")) == self.model.stored

    @invariant()
    def hot_views_equal_the_model(self) -> None:
        for buyer in self.buyers:
            view = self.run(self.hot.view(buyer))
            if buyer not in self.loaded:
                assert view is None
                continue
            assert view is not None
            settled = self.model.balance((AccountKind.BUYER, buyer))
            assert view.balance_micro == settled - self.model.charged_ahead(buyer)
            assert view.effective_micro == self.model.effective(buyer)
            assert view.held_micro == 0, "a hold outlived its request"
            assert view.available_micro >= 0 or buyer in self.refunded

    @invariant()
    def the_audit_finds_nothing(self) -> None:
        if not self.buyers:
            return

        async def check() -> list[str]:
            async with self.rig.db.acquire() as conn:
                return [str(b) for b in await audit(conn)]

        assert self.run(check()) == []


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database("moneysm") as url:
        yield url


@pytest.fixture
def rig(dsn: str) -> Iterator[Rig]:
    async def connect() -> asyncpg.Pool:
        # Inside the loop: the pool binds itself to the running loop, not to a "current" one.
        return await asyncpg.create_pool(dsn, min_size=1, max_size=2)

    loop = asyncio.new_event_loop()
    db = loop.run_until_complete(connect())
    redis = Redis.from_url(TEST_REDIS_URL)
    try:
        yield Rig(loop, db, redis)
    finally:
        try:
            loop.run_until_complete(redis.aclose())
            loop.run_until_complete(db.close())
        finally:
            loop.close()


def test_random_requests_settlements_and_repairs_keep_money_equal_to_the_model(rig: Rig) -> None:
    run_state_machine_as_test(
        # Any factory of machines works (hypothesis calls it once per example); its stub says a class.
        lambda: MoneyMachine(rig),  # type: ignore[arg-type]
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )


def test_a_refund_before_its_charges_settle_is_not_a_usage_overdraw(rig: Rig) -> None:
    """A buyer with 7 USD spends 3.5 (admitted: it was there); before the worker settles it, Stripe
    refunds 4.2. The refund is what takes the buyer below zero (DESIGN.md allows it), yet in
    Postgres the usage transfer comes after the refund and takes the balance from 2.8 to -0.7 USD."""
    machine = MoneyMachine(rig, sidestep_audit_bug=False)
    try:
        machine.people([7_000_000, 0, 0])
        machine.request(0, 0, Ask(share=50, nudge=0), Answer("ok", 100, 0, finishes_first=False))
        machine.refund(0, share=60)
        machine.settle()
        machine.postgres_balances_equal_the_model()
        machine.hot_views_equal_the_model()
        assert machine.model.balance((AccountKind.BUYER, machine.buyers[0])) == -700_000
        machine.the_audit_finds_nothing()
    finally:
        machine.teardown()


def test_a_reconcile_after_a_swept_hold_does_not_let_the_buyer_spend_its_charge_again(rig: Rig) -> None:
    """A buyer with 1 USD makes a request whose process stalls past the hold's ttl; the sweeper
    voids the hold, then the request finishes costing 0.5 USD. The reconciler runs before the worker
    settles it, then the worker settles: Postgres says 0.5 USD, the hot view still lets them spend 1."""
    machine = MoneyMachine(rig, sidestep_reconcile_bug=False)
    try:
        machine.people([1_000_000, 0, 0])
        machine.stalled_request(0, 0, Ask(share=100, nudge=0), Answer("ok", 50, 0, finishes_first=False))
        machine.hot_views_equal_the_model()  # right so far: the view counts the charge already
        machine.run(machine.reconciler.run_once())  # "repairs" bal from 500_000 back up to 1_000_000
        machine.settle()
        machine.postgres_balances_equal_the_model()
        assert machine.model.balance((AccountKind.BUYER, machine.buyers[0])) == 500_000
        machine.hot_views_equal_the_model()
    finally:
        machine.teardown()
