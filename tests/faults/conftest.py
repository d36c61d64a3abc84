"""Fixtures for the fault suite (`make test-faults`): broken upstreams, Redis restarts, killed gateways.

The processes, the throw-away database and Redis prefix, the gateway factory and the end-of-session
settle-and-audit come from tests/integration/conftest.py: importing its fixture functions here makes
pytest register them for this folder too (a conftest's fixtures are only seen below it). They are
separate instances from the integration folder's, so a full `make test` gets a second, small
session database that is audited on its own; nothing here starts the integration session's nine
fakes and three gateways.

The fault fakes are started once: each is the ordinary fake upstream with one fault knob set on its
command line, listed under a model of its own, so the gateway's routing alone picks the fault.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis as redis_sync
from redis.asyncio import Redis

from aichat_gateway.billing import ledger
from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.holdplan import buyer_tag
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.config.settings import Settings
from aichat_gateway.marketplace.pricing import Price, cost_micro
from tests.integration import conftest as integration
from tests.integration.conftest import (
    Account,
    FakeUpstream,
    GatewayFactory,
    Proc,
    Processes,
    UsageEvents,
    await_until,
    create_listing,
    fund,
    provider_key,
    register_and_login,
    serving,
    spawn_fake,
    wait_for_models,
)

# The integration fixtures this folder uses, registered here by name (pytest finds fixtures among a
# conftest's module attributes); the autouse one settles and audits this session's database at the end.
processes = integration.processes
proxy_database_url = integration.proxy_database_url
proxy_redis_prefix = integration.proxy_redis_prefix
proxy_settings = integration.proxy_settings
gateway_factory = integration.gateway_factory
ledger_invariants_hold_after_the_session = integration.ledger_invariants_hold_after_the_session

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


@pytest.fixture(scope="session")
def fault_fakes(processes: Processes) -> FaultFakes:
    started = FaultFakes(
        main=spawn_fake(processes, "fault-fake-main"),
        paced=spawn_fake(processes, "fault-fake-paced", "--chunks", "40", "--chunk-interval-ms", "100"),
        trickle=spawn_fake(processes, "fault-fake-trickle", "--trickle-ms", str(TRICKLE_MS)),
        abort=spawn_fake(processes, "fault-fake-abort", "--abort-after", str(ABORT_AFTER)),
        garbage=spawn_fake(processes, "fault-fake-garbage", "--garbage"),
    )
    for fake in vars(started).values():
        fake.wait_healthy()
    return started


@pytest.fixture(scope="session")
def fault_gateway(gateway_factory: GatewayFactory, fault_fakes: FaultFakes) -> Proc:
    return gateway_factory.start(
        "gateway-faults",
        GATEWAY_UPSTREAM_READ_TIMEOUT=str(READ_TIMEOUT_S),
        GATEWAY_UPSTREAM_DEADLINE=str(DEADLINE_S),
    )


@dataclass(frozen=True)
class FaultMarket:
    seller: Account
    models: dict[str, str]  # fake name -> the model listed on it alone


@pytest.fixture(scope="session")
def fault_market(fault_gateway: Proc, fault_fakes: FaultFakes) -> FaultMarket:
    seller = register_and_login(fault_gateway, "fault-seller", "fault-seller-" + secrets.token_hex(8))
    models: dict[str, str] = {}
    for name, fake in vars(fault_fakes).items():
        models[name] = f"fault-{name}-{uuid.uuid4().hex[:6]}"
        served, pricing = serving(models[name])
        body = {
            "name": f"fault tests: {name}",
            "provider": "openai",
            "base_url": fake.base_url,
            "api_key": provider_key(),
            "models": served,
            "pricing": pricing,
            "attest_resale": True,
        }
        create_listing(fault_gateway, seller, body)
    return FaultMarket(seller, models)


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


@pytest.fixture(scope="session")
def fault_usage(proxy_settings: Settings) -> Iterator[UsageEvents]:
    client = redis_sync.Redis.from_url(proxy_settings.redis_url)
    try:
        yield UsageEvents(client, proxy_settings.redis_prefix)
    finally:
        client.close()
