"""A gateway killed (SIGKILL) mid-stream: the buyer's connection breaks at once, and the hold the
request had taken is voided once its deadline passes, so the buyer's money comes back whole: no
usage event was written for the request, nothing is charged, nothing twice.

The gateway runs with GATEWAY_HOLD_TTL=2 and a Redis prefix of its own; the sweep that a surviving
gateway would run every 5 s is called here with a clock 3 s ahead (the hold's deadline is at most
2 s after the kill, because the stream renewed it until then), so nothing waits for real time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import redis as redis_sync
from redis.asyncio import Redis

from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.config.settings import Settings
from tests.support.faults import FUNDS_MICRO, MESSAGES, FaultFakes, FaultMarket, assert_books_balance, new_buyer
from tests.support.gateways import GatewayFactory
from tests.support.processes import Proc
from tests.support.scratch import redis_prefix
from tests.support.usage import UsageEvents

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(60)]

HOLD_TTL_S = 2.0
LINES_BEFORE_KILL = 3


@pytest.fixture(scope="module")
def killed_settings(proxy_settings: Settings) -> Iterator[Settings]:
    with redis_prefix("tkill") as prefix:
        yield proxy_settings.model_copy(update={"redis_prefix": prefix})


@pytest.fixture(scope="module")
def doomed_gateway(
    gateway_factory: GatewayFactory, killed_settings: Settings, fault_market: FaultMarket, fault_fakes: FaultFakes
) -> Proc:
    return gateway_factory.start(
        "gateway-doomed", GATEWAY_REDIS_PREFIX=killed_settings.redis_prefix, GATEWAY_HOLD_TTL=str(HOLD_TTL_S)
    )


async def test_a_gateway_killed_mid_stream_breaks_the_connection_and_its_hold_is_voided_charging_nothing(
    doomed_gateway: Proc, killed_settings: Settings, fault_market: FaultMarket
) -> None:
    model = fault_market.models["paced"]  # 40 chunks 100 ms apart: about 4 s if read to the end
    buyer = await asyncio.to_thread(new_buyer, doomed_gateway, killed_settings, "killed-mid-stream", [model])
    redis = Redis.from_url(killed_settings.redis_url)
    hot = HotBalances(redis, killed_settings.redis_prefix)
    lines: list[str] = []
    body = {"model": model, "messages": MESSAGES, "stream": True}
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            with pytest.raises(httpx.TransportError):
                async with (
                    asyncio.timeout(10),
                    client.stream(
                        "POST", doomed_gateway.base_url + "/chat/completions", json=body, headers=buyer.headers
                    ) as answer,
                ):
                    assert answer.status_code == 200
                    rid = answer.headers["x-request-id"]
                    async for line in answer.aiter_lines():
                        if line.startswith("data:"):
                            lines.append(line)
                            if len(lines) == LINES_BEFORE_KILL:
                                view = await hot.view(buyer.id)
                                assert view is not None and view.held_micro > 0, "the stream holds money"
                                doomed_gateway.popen.kill()
                                killed_at = time.monotonic()
        assert time.monotonic() - killed_at < 5, "the buyer's connection broke at once"
        assert len(lines) == LINES_BEFORE_KILL and "data: [DONE]" not in lines

        view = await hot.view(buyer.id)
        assert view is not None and view.held_micro > 0, "nobody resolved the hold of the dead process"
        later = HotBalances(redis, killed_settings.redis_prefix, clock=lambda: time.time() + HOLD_TTL_S + 1)
        assert await later.sweep() == 1
        view = await hot.view(buyer.id)
        assert view is not None and view.available_micro == FUNDS_MICRO
    finally:
        await redis.aclose()

    events = redis_sync.Redis.from_url(killed_settings.redis_url)
    try:
        assert UsageEvents(events, killed_settings.redis_prefix).for_request(rid) == []
    finally:
        events.close()
    await assert_books_balance(killed_settings, buyer, 0)
