"""A listing that fails in any way (500s, hangs, connection resets) is cut off by its breaker after
the threshold while a healthy listing serves every buyer request; after the reset timeout it gets
one probe at a time."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.fakes import Fakes
from tests.support.gateways import GatewayFactory
from tests.support.market import (
    PRICE_CHEAP,
    PRICE_DEAR,
    Account,
    Market,
    create_listing,
    provider_key,
    register_and_login,
    serving,
    wait_for_models,
)
from tests.support.processes import Proc
from tests.support.scratch import redis_prefix

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.timeout(60)]

FAIL_MAX = 3
MESSAGES = [{"role": "user", "content": "hi"}]


class Resetter:
    """A 'provider' that accepts each connection and resets it at once (RST, not FIN)."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture(scope="module")
def seller(gateway: Proc) -> Account:
    return register_and_login(gateway, "breaker-faults", "breaker-faults-password")


def strict_gateway(gateway_factory: GatewayFactory, prefix: str, name: str, reset_timeout: str) -> Proc:
    return gateway_factory.start(
        name,
        GATEWAY_REDIS_PREFIX=prefix,
        GATEWAY_BREAKER_FAIL_MAX=str(FAIL_MAX),
        GATEWAY_BREAKER_RESET_TIMEOUT=reset_timeout,
        GATEWAY_UPSTREAM_READ_TIMEOUT="0.5",  # a hang is a failure after half a second
    )


@pytest.fixture(scope="module")
def closed_gateway(gateway_factory: GatewayFactory) -> Iterator[Proc]:
    with redis_prefix("tbrf") as prefix:  # breakers of its own, never half-open during a test
        yield strict_gateway(gateway_factory, prefix, "gateway-breaker-faults", "600")


@pytest.fixture(scope="module")
def probing_gateway(gateway_factory: GatewayFactory) -> Iterator[Proc]:
    with redis_prefix("tbrp") as prefix:
        yield strict_gateway(gateway_factory, prefix, "gateway-breaker-probes", "0.3")


@pytest.fixture
async def resetter() -> AsyncIterator[Resetter]:
    server = Resetter()
    await server.start()
    yield server
    await server.stop()


def list_pair(gateway: Proc, seller: Account, market: Market, model: str, bad_url: str, good_url: str) -> None:
    """A cheap failing listing (tried first) and a dearer healthy one for `model`."""
    for url, price in ((bad_url, PRICE_CHEAP), (good_url, PRICE_DEAR)):
        create_listing(
            gateway,
            seller,
            {
                "name": f"fault {model}",
                "provider": "openai",
                "base_url": url,
                "api_key": provider_key(),
                "models": serving(model, price)[0],
                "pricing": price,
                "attest_resale": True,
            },
        )


async def ask_many(gateway: Proc, market: Market, model: str, n: int) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {market.buyer_key}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        return [await client.post("/chat/completions", json={"model": model, "messages": MESSAGES}) for _ in range(n)]


async def test_a_hanging_listing_is_cut_off_after_the_threshold(
    closed_gateway: Proc, seller: Account, market: Market, fakes: Fakes
) -> None:
    list_pair(closed_gateway, seller, market, "fault-hang-model", fakes.hanging.base_url, fakes.main.base_url)
    await asyncio.to_thread(wait_for_models, closed_gateway, market.buyer_key, ["fault-hang-model"])
    before = fakes.hanging.stats()["requests"]
    answers = await ask_many(closed_gateway, market, "fault-hang-model", 12)
    assert [a.status_code for a in answers] == [200] * 12
    assert fakes.hanging.stats()["requests"] - before == FAIL_MAX


async def test_a_listing_that_resets_connections_is_cut_off_after_the_threshold(
    closed_gateway: Proc, seller: Account, market: Market, fakes: Fakes, resetter: Resetter
) -> None:
    port = resetter.server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    list_pair(closed_gateway, seller, market, "fault-reset-model", f"http://127.0.0.1:{port}/v1", fakes.main.base_url)
    await asyncio.to_thread(wait_for_models, closed_gateway, market.buyer_key, ["fault-reset-model"])
    answers = await ask_many(closed_gateway, market, "fault-reset-model", 12)
    assert [a.status_code for a in answers] == [200] * 12
    assert resetter.connections == FAIL_MAX


async def test_after_the_reset_timeout_a_broken_listing_gets_one_probe_at_a_time(
    probing_gateway: Proc, seller: Account, market: Market, fakes: Fakes
) -> None:
    """Reset timeout 0.3 s: over a run of T seconds the failing listing may see the threshold plus
    at most one probe per reset period; every buyer request still succeeds."""
    list_pair(probing_gateway, seller, market, "fault-probe-model", fakes.failing.base_url, fakes.main.base_url)
    await asyncio.to_thread(wait_for_models, probing_gateway, market.buyer_key, ["fault-probe-model"])
    before = fakes.failing.stats()["requests"]
    started = time.monotonic()
    answers = await ask_many(probing_gateway, market, "fault-probe-model", 60)
    elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 60
    seen = fakes.failing.stats()["requests"] - before
    probes_allowed = int(elapsed / 0.3) + 1
    assert FAIL_MAX <= seen <= FAIL_MAX + probes_allowed
