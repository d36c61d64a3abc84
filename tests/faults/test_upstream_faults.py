"""Upstreams that misbehave after answering 200: trickle, hang up mid-answer, or send garbage.

Each case checks the buyer's side (a bounded wait, then a clear error or an error event), the usage
event (what was delivered, at the listing's price), and the money once settled (the buyer's
Postgres balance, the hot view, the ledger's invariants). Stalls and Postgres or Redis outages
have their own tests (tests/integration/test_proxy_failover.py, test_redis_outage.py, ...), marked
`faults` too.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from aichat_gateway.config.settings import Settings
from aichat_gateway.proxy.tokens import TokenCounter
from tests.support.calls import assert_openai_error
from tests.support.faults import (
    ABORTED_TEXT,
    DEADLINE_S,
    MESSAGES,
    READ_TIMEOUT_S,
    Buyer,
    FaultMarket,
    assert_books_balance,
    data_lines,
    delivered_text,
    new_buyer,
    price_of,
    settled_usage,
)
from tests.support.processes import Proc
from tests.support.usage import UsageEvents

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(60)]

# Longest a cut request may take: the gateway's own bound plus room for a loaded 2-core machine.
SLACK_S = 2.5


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


async def buyer_for(fault_gateway: Proc, proxy_settings: Settings, fault_market: FaultMarket, fake: str) -> Buyer:
    model = fault_market.models[fake]
    return await asyncio.to_thread(new_buyer, fault_gateway, proxy_settings, f"fault-{fake}", [model])


async def ask(gateway: Proc, buyer: Buyer, model: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            gateway.base_url + "/chat/completions",
            json={"model": model, "messages": MESSAGES},
            headers=buyer.headers,
        )
    return answer, time.monotonic() - started


async def ask_stream(
    gateway: Proc, buyer: Buyer, model: str, within: float = 10.0
) -> tuple[httpx.Response, list[str], float]:
    """A streamed request read to its end, within `within` seconds: (response, its data lines, seconds taken)."""
    started = time.monotonic()
    body = {"model": model, "messages": MESSAGES, "stream": True}
    async with (
        asyncio.timeout(within),
        httpx.AsyncClient(timeout=30) as client,
        client.stream("POST", gateway.base_url + "/chat/completions", json=body, headers=buyer.headers) as answer,
    ):
        text = (await answer.aread()).decode()
    return answer, data_lines(text), time.monotonic() - started


def assert_ends_with_an_upstream_error_event(lines: list[str]) -> None:
    assert lines, "the stream sent nothing"
    assert "[DONE]" not in lines, lines
    assert '"code":"upstream_error"' in lines[-1], lines[-1]


async def one_event(usage: UsageEvents, answer: httpx.Response) -> dict[str, str]:
    [event] = await usage.wait_for(answer.headers["x-request-id"])
    return event


async def assert_charged_nothing(settings: Settings, buyer: Buyer, event: dict[str, str]) -> None:
    assert event["cost_micro"] == "0", event
    [row] = await settled_usage(settings, buyer, 1)
    assert (row["cost_micro"], row["transfer_id"]) == (0, None)
    await assert_books_balance(settings, buyer, 0)


# ---- a provider that trickles its answer ----------------------------------------------------------


async def test_a_trickled_answer_is_cut_at_the_deadline_with_a_504_and_costs_nothing(
    fault_gateway: Proc, proxy_settings: Settings, fault_market: FaultMarket, fault_usage: UsageEvents
) -> None:
    """Never silent for the read timeout, so only the deadline on the whole answer cuts it."""
    buyer = await buyer_for(fault_gateway, proxy_settings, fault_market, "trickle")
    answer, took = await ask(fault_gateway, buyer, fault_market.models["trickle"])
    assert_openai_error(answer, 504, code="upstream_timeout")
    assert DEADLINE_S <= took < DEADLINE_S + SLACK_S
    event = await one_event(fault_usage, answer)
    assert (event["outcome"], event["status"]) == ("upstream_timeout", "504")
    await assert_charged_nothing(proxy_settings, buyer, event)


async def test_a_trickled_stream_is_cut_with_an_error_event_once_no_event_completes_within_the_read_timeout(
    fault_gateway: Proc, proxy_settings: Settings, fault_market: FaultMarket, fault_usage: UsageEvents
) -> None:
    """One byte every 20 ms keeps each read short of the read timeout, but the first event (about
    200 bytes) would take 4 s: the stream is cut after the read timeout without a whole event."""
    buyer = await buyer_for(fault_gateway, proxy_settings, fault_market, "trickle")
    answer, lines, took = await ask_stream(fault_gateway, buyer, fault_market.models["trickle"])
    assert answer.status_code == 200
    assert took < READ_TIMEOUT_S + SLACK_S
    assert_ends_with_an_upstream_error_event(lines)
    assert delivered_text(lines) == ""
    event = await one_event(fault_usage, answer)
    assert (event["outcome"], event["stream"], event["completion_tokens"]) == ("upstream_error", "1", "0")
    await assert_charged_nothing(proxy_settings, buyer, event)


# ---- a provider that hangs up mid-answer ----------------------------------------------------------


async def test_a_stream_whose_provider_hangs_up_ends_with_an_error_event_and_is_charged_what_was_delivered(
    fault_gateway: Proc,
    proxy_settings: Settings,
    fault_market: FaultMarket,
    fault_usage: UsageEvents,
    counter: TokenCounter,
) -> None:
    buyer = await buyer_for(fault_gateway, proxy_settings, fault_market, "abort")
    answer, lines, took = await ask_stream(fault_gateway, buyer, fault_market.models["abort"])
    assert answer.status_code == 200
    assert took < SLACK_S
    assert_ends_with_an_upstream_error_event(lines)
    assert delivered_text(lines) == ABORTED_TEXT
    event = await one_event(fault_usage, answer)
    assert (event["outcome"], event["stream"]) == ("upstream_error", "1")
    prompt, completion = int(event["prompt_tokens"]), int(event["completion_tokens"])
    assert completion == counter.count_text(ABORTED_TEXT)
    cost = price_of(prompt, completion)
    assert int(event["cost_micro"]) == cost > 0
    [row] = await settled_usage(proxy_settings, buyer, 1)
    assert (row["cost_micro"], row["completion_tokens"], row["outcome"]) == (cost, completion, "upstream_error")
    await assert_books_balance(proxy_settings, buyer, cost)


async def test_a_plain_answer_cut_short_of_its_length_is_a_502_that_costs_nothing(
    fault_gateway: Proc, proxy_settings: Settings, fault_market: FaultMarket, fault_usage: UsageEvents
) -> None:
    buyer = await buyer_for(fault_gateway, proxy_settings, fault_market, "abort")
    answer, took = await ask(fault_gateway, buyer, fault_market.models["abort"])
    assert_openai_error(answer, 502, code="upstream_error")
    assert took < SLACK_S
    await assert_charged_nothing(proxy_settings, buyer, await one_event(fault_usage, answer))


# ---- a provider that answers garbage --------------------------------------------------------------


async def test_a_plain_answer_that_is_not_json_is_a_502_that_costs_nothing(
    fault_gateway: Proc, proxy_settings: Settings, fault_market: FaultMarket, fault_usage: UsageEvents
) -> None:
    buyer = await buyer_for(fault_gateway, proxy_settings, fault_market, "garbage")
    answer, _ = await ask(fault_gateway, buyer, fault_market.models["garbage"])
    error = assert_openai_error(answer, 502, code="upstream_error")
    assert "unreadable" in error["message"]
    event = await one_event(fault_usage, answer)
    assert (event["outcome"], event["status"]) == ("upstream_error", "502")
    await assert_charged_nothing(proxy_settings, buyer, event)


async def test_a_stream_of_malformed_events_without_done_ends_with_an_error_event_and_costs_nothing(
    fault_gateway: Proc, proxy_settings: Settings, fault_market: FaultMarket, fault_usage: UsageEvents
) -> None:
    buyer = await buyer_for(fault_gateway, proxy_settings, fault_market, "garbage")
    answer, lines, _ = await ask_stream(fault_gateway, buyer, fault_market.models["garbage"])
    assert answer.status_code == 200
    assert_ends_with_an_upstream_error_event(lines)
    event = await one_event(fault_usage, answer)
    assert (event["outcome"], event["stream"], event["completion_tokens"]) == ("upstream_error", "1", "0")
    await assert_charged_nothing(proxy_settings, buyer, event)
