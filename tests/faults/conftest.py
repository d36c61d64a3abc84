"""Fixtures for the fault suite (`make test-faults`): broken upstreams, Redis restarts, killed gateways.

The processes, the throw-away database and Redis prefix, the gateway factory and the end-of-session
settle-and-audit are tests/support/proxy_fixtures.py's, registered here as in
tests/integration/conftest.py (a conftest's fixtures are only seen below it). They are separate
instances from the integration folder's, so a full `make test` gets a second, small session
database that is audited on its own; nothing here starts the integration session's nine fakes and
three gateways. The suite's helpers are in tests/support/faults.py.

The fault fakes are started once: each is the ordinary fake upstream with one fault knob set on its
command line, listed under a model of its own, so the gateway's routing alone picks the fault.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import pytest
import redis as redis_sync

from aichat_gateway.config.settings import Settings
from tests.support import proxy_fixtures
from tests.support.fakes import spawn_fake
from tests.support.faults import ABORT_AFTER, DEADLINE_S, READ_TIMEOUT_S, TRICKLE_MS, FaultFakes, FaultMarket
from tests.support.gateways import GatewayFactory
from tests.support.market import create_listing, provider_key, register_and_login, serving
from tests.support.processes import Proc, Processes
from tests.support.usage import UsageEvents

# The session fixtures this folder shares with tests/integration, registered here by name (pytest
# finds fixtures among a conftest's module attributes); the autouse one settles and audits this
# session's database at the end.
processes = proxy_fixtures.processes
proxy_database_url = proxy_fixtures.proxy_database_url
proxy_redis_prefix = proxy_fixtures.proxy_redis_prefix
proxy_settings = proxy_fixtures.proxy_settings
gateway_factory = proxy_fixtures.gateway_factory
ledger_invariants_hold_after_the_session = proxy_fixtures.ledger_invariants_hold_after_the_session


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


@pytest.fixture(scope="session")
def fault_usage(proxy_settings: Settings) -> Iterator[UsageEvents]:
    client = redis_sync.Redis.from_url(proxy_settings.redis_url)
    try:
        yield UsageEvents(client, proxy_settings.redis_prefix)
    finally:
        client.close()
