"""Fixtures for the `/v1` hot-path tests: real gateway and fake-upstream processes on 127.0.0.1.

Everything here is a subprocess started through the public CLI (`aichat-gateway serve`,
`aichat-gateway fake-upstream`), because streaming, disconnects, SIGTERM and cross-process
revocation only exist over real sockets. Processes are started once per session (the SIGTERM test
starts its own), each logs to its own file under the session's tmp dir so tests can search the
logs, and every one of them is killed at teardown, also when a test failed.

The marketplace is seeded over HTTP, the way a new user would do it: a seller registers, logs in
and lists the fake upstreams; a buyer registers, logs in and creates a gateway key. The helpers
live in tests/support/ (processes, fakes, gateways, market, usage, calls); the session's
processes, database, Redis prefix, gateway factory and end-of-session audit in
tests/support/proxy_fixtures.py, shared with tests/faults.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis as redis_sync

from aichat_gateway.config.settings import Settings
from tests.support import proxy_fixtures
from tests.support.fakes import KEYED_FAKE_KEY, Fakes, FakeUpstream, spawn_fake
from tests.support.gateways import GatewayFactory, Gateways
from tests.support.market import (
    BUYER_FUNDS_USD,
    PASSWORD_BUYER,
    PASSWORD_SELLER,
    PRICE_CHEAP,
    PRICE_DEAR,
    Market,
    create_listing,
    fund,
    provider_key,
    register_and_login,
    serving,
    wait_for_models,
)
from tests.support.ports import free_port
from tests.support.processes import Proc, Processes
from tests.support.usage import UsageEvents

# The session fixtures this folder shares with tests/faults, registered here by name (pytest finds
# fixtures among a conftest's module attributes); the autouse one settles and audits the session's
# database at the end.
processes = proxy_fixtures.processes
proxy_database_url = proxy_fixtures.proxy_database_url
proxy_redis_prefix = proxy_fixtures.proxy_redis_prefix
proxy_settings = proxy_fixtures.proxy_settings
gateway_factory = proxy_fixtures.gateway_factory
ledger_invariants_hold_after_the_session = proxy_fixtures.ledger_invariants_hold_after_the_session


# ---- fake upstreams -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def fakes(processes: Processes) -> Fakes:
    """All fake upstreams of the session, started side by side."""
    started = Fakes(
        main=spawn_fake(processes, "fake-main"),
        failing=spawn_fake(processes, "fake-failing", "--error-rate", "1", "--error-status", "500"),
        keyed=spawn_fake(processes, "fake-keyed", "--require-key", KEYED_FAKE_KEY),
        busy=spawn_fake(processes, "fake-busy", "--error-rate", "1", "--error-status", "429", "--retry-after", "7"),
        sleepy=spawn_fake(processes, "fake-sleepy", "--latency-ms", "3000"),
        slow=spawn_fake(processes, "fake-slow", "--chunks", "20", "--chunk-interval-ms", "100"),
        paced=spawn_fake(processes, "fake-paced", "--chunks", "50", "--chunk-interval-ms", "200"),
        hanging=spawn_fake(processes, "fake-hanging", "--latency-ms", "10000"),
        stalling=spawn_fake(processes, "fake-stalling", "--chunks", "3", "--chunk-interval-ms", "1500"),
        reasoning=spawn_fake(
            processes, "fake-reasoning", "--chunks", "4", "--usage-delay-ms", "400", "--reasoning-tokens", "4994"
        ),
    )
    for fake in vars(started).values():
        fake.wait_healthy()
    return started


@pytest.fixture(scope="session")
def fake_upstream(fakes: Fakes) -> FakeUpstream:
    """The well-behaved fake provider; `.base_url` is `http://127.0.0.1:P/v1`."""
    return fakes.main


# ---- gateways -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gateways(gateway_factory: GatewayFactory) -> Gateways:
    """The session's gateways, started side by side (each takes about a second to import)."""
    started = Gateways(
        a=gateway_factory.spawn("gateway-a", GATEWAY_LOG_LEVEL="debug"),  # the secrets test reads it
        b=gateway_factory.spawn("gateway-b"),
        strict=gateway_factory.spawn(
            "gateway-strict", GATEWAY_MAX_BODY_BYTES="4096", GATEWAY_UPSTREAM_READ_TIMEOUT="0.5"
        ),
    )
    for proc in (started.a, started.b, started.strict):
        proc.wait_healthy()
    return started


@pytest.fixture(scope="session")
def gateway(gateways: Gateways) -> Proc:
    return gateways.a


# ---- the marketplace, seeded over HTTP ------------------------------------------------------------


@pytest.fixture(scope="session")
def market(gateways: Gateways, fakes: Fakes, proxy_settings: Settings) -> Market:
    a = gateways.a
    seller = register_and_login(a, "seller", PASSWORD_SELLER)
    buyer = register_and_login(a, "buyer", PASSWORD_BUYER)
    fund(proxy_settings, buyer.id, BUYER_FUNDS_USD)
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connect errors
    cheap, dear = PRICE_CHEAP, PRICE_DEAR
    # name -> (base URL, (models, pricing)). Each listing gets its own provider key.
    specs: dict[str, tuple[str, tuple[list[dict[str, str]], dict[str, str]]]] = {
        "main": (
            fakes.main.base_url,
            (
                [
                    {"model": "gpt-4o-mini"},
                    {"model": "gpt-4o", "upstream_model": "gpt-4o-2024-08-06"},
                    {"model": "text-embedding-3-small"},
                ],
                {"multiplier": "1"},
            ),
        ),
        "failing": (fakes.failing.base_url, serving("failing-model")),
        "busy": (fakes.busy.base_url, serving("busy-model")),
        "sleepy": (fakes.sleepy.base_url, serving("sleepy-model")),
        "slow": (fakes.slow.base_url, serving("slow-model")),
        "paced": (fakes.paced.base_url, serving("paced-model")),
        "hanging": (fakes.hanging.base_url, serving("hanging-model")),
        "stalling": (fakes.stalling.base_url, serving("stalling-model")),
        "reasoning": (fakes.reasoning.base_url, serving("reasoning-model")),
        "dead": (dead, serving("dead-model")),
        # Two models served twice: the cheaper listing (tried first) fails, the dearer one answers.
        "failover-500-bad": (fakes.failing.base_url, serving("failover-500-model", cheap)),
        "failover-500-good": (fakes.main.base_url, serving("failover-500-model", dear)),
        "failover-dead-bad": (dead, serving("failover-dead-model", cheap)),
        "failover-dead-good": (fakes.main.base_url, serving("failover-dead-model", dear)),
        # The cheap listing's key is one the keyed fake rejects (key checks are off here).
        "invalid-key-bad": (fakes.keyed.base_url, serving("invalid-key-model", cheap)),
        "invalid-key-good": (fakes.main.base_url, serving("invalid-key-model", dear)),
    }
    listings: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}
    models: set[str] = set()
    # Anthropic listings: the fake's Messages API, listed at its root URL as a seller of
    # api.anthropic.com would list that.
    providers = {"anthropic": "anthropic"}
    specs["anthropic"] = (fakes.main.url, ([{"model": "claude-3-5-haiku"}], {"multiplier": "1"}))
    for name, (base_url, (served, pricing)) in specs.items():
        keys[name] = provider_key()
        listings[name] = create_listing(
            a,
            seller,
            {
                "name": f"proxy tests: {name}",
                "provider": providers.get(name, "openai"),
                "base_url": base_url,
                "api_key": keys[name],
                "models": served,
                "pricing": pricing,
                "attest_resale": True,
            },
        )
        models |= {m["model"] for m in served}
    created = httpx.post(a.url + "/api/keys", json={"name": "proxy-tests"}, headers=buyer.auth, timeout=10)
    assert created.status_code == 201, created.text
    market = Market(
        seller=seller,
        buyer=buyer,
        buyer_key=created.json()["key"],
        buyer_key_id=created.json()["id"],
        listings=listings,
        provider_keys=keys,
        models=sorted(models),
    )
    # Every gateway was started before these listings existed: each must pick them up (pub/sub or poll).
    for proc in (gateways.a, gateways.b, gateways.strict):
        wait_for_models(proc, market.buyer_key, market.models)
    return market


# ---- the usage stream -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def usage_events(proxy_settings: Settings) -> Iterator[UsageEvents]:
    client = redis_sync.Redis.from_url(proxy_settings.redis_url)
    try:
        yield UsageEvents(client, proxy_settings.redis_prefix)
    finally:
        client.close()
