"""What the fault suite (tests/faults) shares: its fakes' and gateway's fault settings, buyers of
their own with known funds, and checks that the books balance after a fault."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
from redis.asyncio import Redis

from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.holdplan import buyer_tag
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.config.settings import Settings
from aichat_gateway.marketplace.pricing import Price, cost_micro
from tests.support.fakes import FakeUpstream
from tests.support.market import Account, fund, register_and_login, wait_for_models
from tests.support.processes import Proc
from tests.support.waiting import await_until

# EXPLICIT_PRICE of every fault listing: 1 USD per million prompt tokens, 2 USD per million completion tokens.
PRICE = Price(input_micro_per_million=1_000_000, output_micro_per_million=2_000_000)
FUNDS_MICRO = 1_000_000
MESSAGES = [{"role": "user", "content": "tell me a story"}]
# The fault gateway: a provider silent for 0.5 s is a failure, and a request gets 2 s in all to its
# first byte (a non-stream answer: to its whole body).
READ_TIMEOUT_S = 0.5
DEADLINE_S = 2.0
# The trickling fake sends one byte every 20 ms: never silent for the read timeout, never done in time.
TRICKLE_MS = 20
# The aborting fake closes the connection after 5 frames: the role chunk and "fake reply word1 word2".
ABORT_AFTER = 5
ABORTED_TEXT = "fake reply word1 word2"


@dataclass(frozen=True)
class FaultFakes:
    main: FakeUpstream  # well-behaved: the steady load of the Redis restart tests
    paced: FakeUpstream  # 40 chunks, 100 ms apart: a stream still running when its gateway is killed
    trickle: FakeUpstream  # every answer one byte at a time, TRICKLE_MS apart
    abort: FakeUpstream  # closes the connection ABORT_AFTER frames (or bytes) into the answer
    garbage: FakeUpstream  # 200 with a body that is not JSON; streams of malformed SSE without [DONE]


@dataclass(frozen=True)
class FaultMarket:
    seller: Account
    models: dict[str, str]  # fake name -> the model listed on it alone


# ---- buyers and their money -----------------------------------------------------------------------


@dataclass(frozen=True)
class Buyer:
    account: Account
    key: str

    @property
    def id(self) -> str:
        return self.account.id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def new_buyer(gateway: Proc, settings: Settings, tag: str, models: list[str]) -> Buyer:
    """A buyer of its own with FUNDS_MICRO and a key, once `gateway` routes `models` (sync: call it
    through asyncio.to_thread from a test)."""
    account = register_and_login(gateway, tag, f"{tag}-" + secrets.token_hex(8))
    fund(settings, account.id, str(Decimal(FUNDS_MICRO) / 1_000_000))
    created = httpx.post(gateway.url + "/api/keys", json={"name": tag}, headers=account.auth, timeout=10)
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    wait_for_models(gateway, key, models)
    return Buyer(account, key)


def price_of(prompt_tokens: int, completion_tokens: int) -> int:
    return cost_micro(PRICE, prompt_tokens, completion_tokens)


async def settled_usage(settings: Settings, buyer: Buyer, count: int, within: float = 15.0) -> list[dict[str, Any]]:
    """The buyer's usage rows, once `count` of them are in Postgres (and never more)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        rows: list[dict[str, Any]] = []

        async def enough() -> bool:
            nonlocal rows
            found = await conn.fetch("SELECT * FROM usage_records WHERE buyer_id = $1", uuid.UUID(buyer.id))
            rows = [dict(r) for r in found]
            assert len(rows) <= count, rows
            return len(rows) == count

        await await_until(enough, within, f"{count} usage rows of {buyer.account.email} to settle", interval=0.05)
        return rows
    finally:
        await conn.close()


async def assert_books_balance(settings: Settings, buyer: Buyer, charged_micro: int) -> None:
    """Postgres has the buyer at FUNDS_MICRO - charged_micro, the hot view agrees with nothing held or
    unsettled, and the ledger's invariants hold."""
    conn = await asyncpg.connect(settings.database_url)
    redis = Redis.from_url(settings.redis_url)
    try:
        assert await ledger.balance_micro(conn, ledger.AccountKind.BUYER, buyer.id) == FUNDS_MICRO - charged_micro
        hot = HotBalances(redis, settings.redis_prefix)

        expected = (FUNDS_MICRO - charged_micro, 0, 0)

        async def hot_view_settled() -> bool:
            view = await hot.view(buyer.id)
            return view is not None and (view.balance_micro, view.unsettled_micro, view.held_micro) == expected

        try:
            await await_until(hot_view_settled, 5, "the hot view to show nothing held and the settled balance")
        except AssertionError as exc:
            holds = await redis.hgetall(f"{buyer_tag(settings.redis_prefix, buyer.id)}:holds")
            raise AssertionError(f"{exc}: {await hot.view(buyer.id)}, open holds {holds}") from None
        assert [f"{b.invariant}: {b.detail}" for b in await audit(conn)] == []
    finally:
        await redis.aclose()
        await conn.close()


async def balance_shown(gateway: Proc, buyer: Buyer) -> dict[str, str]:
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.get(gateway.url + "/api/billing/balance", headers=buyer.account.auth)
    assert answer.status_code == 200, answer.text
    shown: dict[str, str] = answer.json()
    return shown


def data_lines(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]


def delivered_text(lines: list[str]) -> str:
    """The content the buyer received in a stream's chunks (error events and [DONE] carry none)."""
    parts = []
    for line in lines:
        if line == "[DONE]":
            continue
        chunk = orjson.loads(line)
        parts += [c["delta"].get("content") or "" for c in chunk.get("choices") or []]
    return "".join(parts)
