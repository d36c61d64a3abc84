"""The meter: exactly one usage event on `<prefix>:usage` per finished `/v1` request with a valid key."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.calls import read_then_leave, request_id
from tests.support.gateways import USAGE_DRAIN_SECONDS
from tests.support.market import Market
from tests.support.processes import Proc
from tests.support.usage import UsageEvents

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hello there"}]
PROMPT_TOKENS = len("hello there") // 4 + 1  # how the fake provider counts


@pytest.fixture
async def http(gateway: Proc, market: Market) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {market.buyer_key}"}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers, timeout=10) as client:
        yield client


async def one_event(
    usage_events: UsageEvents, http: httpx.AsyncClient, rid: str, within: float = 5.0
) -> dict[str, str]:
    """The request's single event. A later request's event showing up first proves no duplicate was
    still on its way (one process appends its events in order)."""
    await usage_events.wait_for(rid, within)
    marker = request_id()
    await http.get("/models")  # authenticated, but /v1/models records no usage
    answer = await http.post(
        "/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}, headers={"x-request-id": marker}
    )
    assert answer.status_code == 200
    await usage_events.wait_for(marker)
    events = usage_events.for_request(rid)
    assert len(events) == 1, events
    return events[0]


def assert_common(event: dict[str, str], market: Market, rid: str, model: str) -> None:
    assert event["request_id"].rsplit(".", 1)[0] == rid  # booked with a unique suffix (edge.charge_id)
    assert event["key_id"] == market.buyer_key_id
    assert event["user_id"] == market.buyer.id
    assert event["model"] == model
    assert int(event["latency_ms"]) >= 0 and int(event["ts_ms"]) > 0


async def post(http: httpx.AsyncClient, rid: str, **body: Any) -> httpx.Response:
    return await http.post("/chat/completions", json={"messages": MESSAGES, **body}, headers={"x-request-id": rid})


async def test_a_successful_non_streamed_request_records_one_event_with_the_providers_usage(
    http: httpx.AsyncClient, market: Market, usage_events: UsageEvents
) -> None:
    rid = request_id()
    answer = await post(http, rid, model="gpt-4o-mini")
    assert answer.status_code == 200 and answer.headers["x-request-id"] == rid
    event = await one_event(usage_events, http, rid)
    assert_common(event, market, rid, "gpt-4o-mini")
    assert event["listing_id"] == market.listings["main"]["id"]
    assert (event["outcome"], event["status"], event["stream"], event["attempts"]) == ("ok", "200", "0", "1")
    assert (event["prompt_tokens"], event["completion_tokens"]) == (str(PROMPT_TOKENS), "16")
    assert event["usage_source"] == "upstream"
    # gpt-4o-mini at the catalog's list price ($0.15 / $0.60 per 1M), rounded up to a micro-USD.
    expected = -(-(150_000 * PROMPT_TOKENS + 600_000 * 16) // 1_000_000)
    assert int(event["cost_micro"]) == expected <= int(event["held_micro"])
    assert event["seller_id"] == market.seller.id
    assert answer.headers["x-gateway-cost-usd"] == f"0.{expected:06d}"
    assert answer.json()["usage"]["cost"] == expected / 1_000_000


async def test_a_successful_stream_records_one_event_with_the_usage_the_buyer_did_not_ask_for(
    http: httpx.AsyncClient, market: Market, usage_events: UsageEvents
) -> None:
    rid = request_id()
    async with http.stream(
        "POST",
        "/chat/completions",
        headers={"x-request-id": rid},
        json={"model": "gpt-4o", "messages": MESSAGES, "stream": True},
    ) as answer:
        assert answer.status_code == 200
        assert '"usage":{' not in (await answer.aread()).decode()
    event = await one_event(usage_events, http, rid)
    assert_common(event, market, rid, "gpt-4o")
    assert event["listing_id"] == market.listings["main"]["id"]
    assert (event["outcome"], event["status"], event["stream"]) == ("ok", "200", "1")
    assert (event["prompt_tokens"], event["completion_tokens"]) == (str(PROMPT_TOKENS), "16")
    assert event["usage_source"] == "upstream"
    assert int(event["ttft_ms"]) >= 0


async def test_an_upstream_error_records_one_event_that_costs_nothing(
    http: httpx.AsyncClient, market: Market, usage_events: UsageEvents
) -> None:
    rid = request_id()
    answer = await post(http, rid, model="failing-model")
    assert answer.status_code == 502
    event = await one_event(usage_events, http, rid)
    assert_common(event, market, rid, "failing-model")
    assert (event["outcome"], event["status"], event["attempts"]) == ("upstream_error", "502", "1")
    assert (event["prompt_tokens"], event["completion_tokens"]) == ("0", "0")
    assert event["cost_micro"] == "0" and int(event["held_micro"]) > 0  # held, then nothing charged


async def test_a_client_disconnect_records_one_event_charging_what_the_provider_sent_until_the_drain_ended(
    gateway: Proc, http: httpx.AsyncClient, market: Market, usage_events: UsageEvents
) -> None:
    rid = request_id()
    # The role chunk (no text), then "fake": one word delivered when the buyer leaves; the paced
    # provider (a word every 200 ms, 50 in all) is read on for USAGE_DRAIN_SECONDS, then closed.
    got = await read_then_leave(gateway, market.buyer_key, "paced-model", events=2, rid=rid)
    assert len(got) == 2
    event = await one_event(usage_events, http, rid, within=USAGE_DRAIN_SECONDS + 5)
    assert_common(event, market, rid, "paced-model")
    assert event["listing_id"] == market.listings["paced"]["id"]
    assert (event["outcome"], event["status"], event["stream"]) == ("client_disconnected", "200", "1")
    assert event["usage_source"] == "estimated"  # the usage comes after the 50th word: never reached
    words_sent = USAGE_DRAIN_SECONDS / 0.2 + 2
    # Each " wordN" counts as up to 3 tokens; the whole answer would be over 100.
    assert 2 <= int(event["completion_tokens"]) <= 3 * words_sent, event
    assert int(event["prompt_tokens"]) > 0
    assert 0 < int(event["cost_micro"]) < int(event["held_micro"])  # what the provider sent, not the hold


async def test_an_unlisted_model_records_one_event_without_a_listing(
    http: httpx.AsyncClient, market: Market, usage_events: UsageEvents
) -> None:
    rid = request_id()
    assert (await post(http, rid, model="no-such-model")).status_code == 404
    event = await one_event(usage_events, http, rid)
    assert_common(event, market, rid, "no-such-model")
    assert (event["outcome"], event["status"], event["listing_id"]) == ("model_not_found", "404", "")
    assert event["attempts"] == "0"
    assert (event["cost_micro"], event["held_micro"]) == ("0", "0")  # refused before any hold


async def test_a_successful_embeddings_request_records_one_event(
    http: httpx.AsyncClient, market: Market, usage_events: UsageEvents
) -> None:
    rid = request_id()
    answer = await http.post(
        "/embeddings", json={"model": "text-embedding-3-small", "input": "abcdefgh"}, headers={"x-request-id": rid}
    )
    assert answer.status_code == 200
    event = await one_event(usage_events, http, rid)
    assert_common(event, market, rid, "text-embedding-3-small")
    assert (event["outcome"], event["status"], event["completion_tokens"]) == ("ok", "200", "0")
    assert event["prompt_tokens"] == str(len("abcdefgh") // 4 + 1)


async def test_a_request_with_a_bad_key_records_no_event(
    gateway: Proc, usage_events: UsageEvents, http: httpx.AsyncClient
) -> None:
    rid = request_id()
    async with httpx.AsyncClient(timeout=10) as anonymous:
        answer = await anonymous.post(
            gateway.base_url + "/chat/completions",
            headers={"x-request-id": rid},
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
        )
    assert answer.status_code == 401
    marker = request_id()
    assert (await post(http, marker, model="gpt-4o-mini")).status_code == 200
    await usage_events.wait_for(marker)
    assert usage_events.for_request(rid) == []


async def test_a_streams_time_to_first_token_includes_the_providers_wait(
    http: httpx.AsyncClient, market: Market, usage_events: UsageEvents
) -> None:
    """sleepy-model's provider waits 3 s before its first byte: that is the buyer's time to first
    token, not the few microseconds the relay takes once the first chunk is in hand."""
    rid = request_id()
    body = {"model": "sleepy-model", "messages": MESSAGES, "stream": True}
    async with http.stream("POST", "/chat/completions", headers={"x-request-id": rid}, json=body) as answer:
        assert answer.status_code == 200
        await answer.aread()
    [event] = await usage_events.wait_for(rid)
    assert 2_900 <= int(event["ttft_ms"]) <= int(event["latency_ms"])
