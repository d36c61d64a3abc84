"""Streams over real sockets: a buyer who leaves cancels the provider's work; SIGTERM drains."""

from __future__ import annotations

import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.support.calls import read_then_leave, request_id
from tests.support.fakes import Fakes
from tests.support.gateways import USAGE_DRAIN_SECONDS, GatewayFactory
from tests.support.market import Market, wait_for_models
from tests.support.processes import Proc
from tests.support.usage import UsageEvents

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "tell me a long story"}]


async def test_a_client_leaving_mid_stream_cancels_the_upstream_request_after_the_usage_drain_time(
    gateway: Proc, market: Market, fakes: Fakes, usage_events: UsageEvents
) -> None:
    """The paced provider needs 10 s for its answer; the gateway reads on for its usage for
    USAGE_DRAIN_SECONDS after the buyer left, then closes it and charges the text it read."""
    before = await fakes.paced.astats()
    rid = request_id()
    got = await read_then_leave(gateway, market.buyer_key, "paced-model", events=2, rid=rid)
    left = time.monotonic()
    assert len(got) == 2
    within = USAGE_DRAIN_SECONDS + 2.0
    stats = await fakes.paced.wait_for_stat("streams_cancelled", before["streams_cancelled"] + 1, within=within)
    assert time.monotonic() - left < within
    assert stats["streams_completed"] == before["streams_completed"], "the provider's stream ran to its end"
    await fakes.paced.wait_for_stat("in_flight", 0, within=2.0)
    [event] = await usage_events.wait_for(rid)
    assert event["outcome"] == "client_disconnected" and event["usage_source"] == "estimated"
    # One word reached the buyer; about ten more were read in the drain time, and are charged.
    assert int(event["completion_tokens"]) > 2


async def test_a_buyer_leaving_after_the_finish_reason_is_charged_the_usage_the_provider_sends_after_it(
    gateway: Proc, market: Market, usage_events: UsageEvents
) -> None:
    """A reasoning model: 4 visible words, then its usage (4 + 4,994 reasoning tokens) 0.4 s later.
    The buyer has the whole visible answer and leaves; the seller is still paid what the provider bills."""
    rid = request_id()
    got = await read_then_leave(gateway, market.buyer_key, "reasoning-model", events=5, rid=rid)
    assert '"finish_reason":"stop"' in got[-1]
    [event] = await usage_events.wait_for(rid)
    assert event["outcome"] == "client_disconnected"
    assert event["usage_source"] == "upstream"
    assert event["completion_tokens"] == str(4 + 4994)
    # 4,998 tokens at 2 USD per million (EXPLICIT_PRICE) is more than the hold (the model is outside the
    # catalog, so the answer was held at 4,096 tokens): the buyer pays the hold, the seller gets it all.
    assert int(event["cost_micro"]) == int(event["held_micro"])
    assert int(event["cost_micro"]) + int(event["beyond_hold_micro"]) >= 4998 * 2


async def test_the_gateway_keeps_serving_after_a_client_left_mid_stream(gateway: Proc, market: Market) -> None:
    await read_then_leave(gateway, market.buyer_key, "paced-model", events=3)
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            gateway.base_url + "/chat/completions",
            headers={"Authorization": f"Bearer {market.buyer_key}"},
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
        )
    assert answer.status_code == 200


async def test_a_client_leaving_before_the_first_byte_cancels_the_upstream_request(
    gateway: Proc, market: Market, fakes: Fakes
) -> None:
    """The hanging provider waits 10 s before its first byte; the buyer gives up after 0.3 s."""
    assert (await fakes.hanging.astats())["in_flight"] == 0
    body = {"model": "hanging-model", "messages": MESSAGES, "stream": True}
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=0.3)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(
                gateway.base_url + "/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {market.buyer_key}"},
            )
    # Still open 1.5 s after the buyer left means the gateway waits for the provider regardless.
    await fakes.hanging.wait_for_stat("in_flight", 0, within=1.5)


# ---- SIGTERM ----------------------------------------------------------------------------------------


@dataclass
class Drain:
    gateway: Proc
    request_id: str
    status: int
    data_lines: list[str]
    signalled_after_lines: int
    exit_code: int | None
    exit_seconds: float  # from SIGTERM to the process having exited


@pytest.fixture(scope="module")
def drain(gateway_factory: GatewayFactory, market: Market) -> Drain:
    """A gateway of its own gets SIGTERM while relaying a 2-second stream (20 chunks, 100 ms apart)."""
    proc = gateway_factory.start("gateway-drain")
    wait_for_models(proc, market.buyer_key, ["slow-model"])
    rid = request_id()
    lines: list[str] = []
    signalled_after = 0
    signalled_at = 0.0
    headers = {"Authorization": f"Bearer {market.buyer_key}", "x-request-id": rid}
    body = {"model": "slow-model", "messages": MESSAGES, "stream": True}
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", proc.base_url + "/chat/completions", json=body, headers=headers) as answer,
    ):
        status = answer.status_code
        for line in answer.iter_lines():
            if line.startswith("data:"):
                lines.append(line)
                if len(lines) == 2:
                    proc.popen.send_signal(signal.SIGTERM)
                    signalled_at = time.monotonic()
                    signalled_after = len(lines)
    exit_code: int | None
    try:
        exit_code = proc.popen.wait(timeout=15)
    except subprocess.TimeoutExpired:
        exit_code = None  # the session teardown kills it
    return Drain(proc, rid, status, lines, signalled_after, exit_code, time.monotonic() - signalled_at)


def _content(lines: list[str]) -> str:
    text = []
    for line in lines:
        payload = line.removeprefix("data:").strip()
        if payload != "[DONE]":
            chunk: dict[str, Any] = orjson.loads(payload)
            text += [c["delta"].get("content") or "" for c in chunk["choices"]]
    return "".join(text)


def test_sigterm_mid_stream_still_delivers_the_whole_stream_ending_with_done(drain: Drain) -> None:
    assert drain.status == 200
    assert drain.signalled_after_lines == 2, "SIGTERM was sent while the stream was in its first chunks"
    assert drain.data_lines[-1] == "data: [DONE]"
    words = ["fake", "reply", *[f"word{i}" for i in range(1, 19)]]
    assert _content(drain.data_lines) == " ".join(words)


def test_sigterm_mid_stream_lets_the_process_exit_by_itself_once_drained(drain: Drain) -> None:
    assert drain.exit_code is not None, f"still running 15 s after SIGTERM:\n{drain.gateway.logs()[-3000:]}"
    # uvicorn re-raises the signal it caught once shutdown is complete, so a clean drain ends in -SIGTERM.
    assert drain.exit_code in (0, -signal.SIGTERM), drain.gateway.logs()[-3000:]
    assert "Application shutdown complete." in drain.gateway.logs()
    assert drain.exit_seconds < 10


def test_sigterm_mid_stream_still_records_the_streams_usage_event(drain: Drain, usage_events: UsageEvents) -> None:
    [event] = usage_events.for_request(drain.request_id)
    assert (event["outcome"], event["status"], event["stream"]) == ("ok", "200", "1")
    assert event["completion_tokens"] == "20"


def test_a_gateway_refuses_new_connections_after_sigterm(drain: Drain, market: Market) -> None:
    with pytest.raises(httpx.ConnectError):
        httpx.get(
            drain.gateway.base_url + "/models", headers={"Authorization": f"Bearer {market.buyer_key}"}, timeout=2
        )
