"""Operational endpoints: liveness, readiness and the Prometheus metrics of the hot path."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest

from tests.support.calls import assert_openai_error, read_then_leave
from tests.support.gateways import USAGE_DRAIN_SECONDS, GatewayFactory
from tests.support.market import Market
from tests.support.processes import Proc
from tests.support.waiting import await_until

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "hello"}]
METRICS_TOKEN = "scrape-" + secrets.token_hex(24)


@pytest.fixture(scope="module")
def metrics_text(gateway: Proc, market: Market) -> str:
    """The metrics page after a success, a stream, a 404 and an upstream failure."""
    headers = {"Authorization": f"Bearer {market.buyer_key}"}
    with httpx.Client(base_url=gateway.base_url, headers=headers, timeout=10) as http:
        assert http.post("/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}).status_code == 200
        streamed = http.post("/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
        assert streamed.status_code == 200
        assert http.post("/chat/completions", json={"model": "nope", "messages": MESSAGES}).status_code == 404
        assert http.post("/chat/completions", json={"model": "failing-model", "messages": MESSAGES}).status_code == 502
        answer = httpx.get(gateway.url + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of the metric `name` (exact sample name)."""
    found = []
    for match in re.finditer(rf"^{re.escape(name)}(?:\{{(.*?)\}})? (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
        found.append((labels, float(match.group(2))))
    return found


def test_healthz_answers_200(gateway: Proc) -> None:
    answer = httpx.get(gateway.url + "/healthz", timeout=5)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"


def test_readyz_answers_200_with_its_checks(gateway: Proc) -> None:
    answer = httpx.get(gateway.url + "/readyz", timeout=5)
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


def test_metrics_count_requests_by_route_model_and_status(metrics_text: str) -> None:
    counted = {
        (labels.get("route"), labels.get("model"), labels.get("status")): value
        for labels, value in samples(metrics_text, "gateway_requests_total")
    }
    assert counted.get(("chat", "gpt-4o-mini", "200"), 0) >= 2
    assert counted.get(("chat", "failing-model", "502"), 0) >= 1
    # An unknown model is not a label value of its own (that would let callers blow up the series).
    assert ("chat", "nope", "404") not in counted
    assert counted.get(("chat", "other", "404"), 0) >= 1


def test_metrics_expose_request_duration(metrics_text: str) -> None:
    counts = dict((labels["route"], v) for labels, v in samples(metrics_text, "gateway_request_duration_seconds_count"))
    assert counts.get("chat", 0) >= 4
    assert samples(metrics_text, "gateway_request_duration_seconds_bucket")


def test_metrics_expose_time_to_first_token_of_streams(metrics_text: str) -> None:
    counts = {labels["model"]: v for labels, v in samples(metrics_text, "gateway_time_to_first_token_seconds_count")}
    assert counts.get("gpt-4o-mini", 0) >= 1


def test_metrics_expose_upstream_duration_by_outcome(metrics_text: str) -> None:
    counts = {labels["outcome"]: v for labels, v in samples(metrics_text, "gateway_upstream_duration_seconds_count")}
    assert counts.get("ok", 0) >= 2
    assert counts.get("retryable", 0) >= 1


def test_metrics_expose_the_inflight_streams_gauge(metrics_text: str) -> None:
    [(_, value)] = samples(metrics_text, "gateway_inflight_streams")
    assert value >= 0


async def test_the_inflight_streams_gauge_counts_a_stream_while_it_is_relayed(gateway: Proc, market: Market) -> None:
    headers = {"Authorization": f"Bearer {market.buyer_key}"}
    body = {"model": "slow-model", "messages": MESSAGES, "stream": True}
    async with httpx.AsyncClient(timeout=10) as client:
        async with client.stream("POST", gateway.base_url + "/chat/completions", json=body, headers=headers) as answer:
            lines = answer.aiter_lines()
            async for line in lines:
                if line.startswith("data:"):
                    break
            during = samples((await client.get(gateway.url + "/metrics")).text, "gateway_inflight_streams")
            rest = [line async for line in lines]
            assert "data: [DONE]" in rest
        after = samples((await client.get(gateway.url + "/metrics")).text, "gateway_inflight_streams")
    assert during[0][1] >= 1
    assert after[0][1] == 0


async def test_the_inflight_streams_gauge_goes_back_down_after_a_client_left(gateway: Proc, market: Market) -> None:
    await read_then_leave(gateway, market.buyer_key, "paced-model", events=2)
    async with httpx.AsyncClient(timeout=10) as client:

        async def back_to_zero() -> bool:
            text = (await client.get(gateway.url + "/metrics")).text
            return samples(text, "gateway_inflight_streams")[0][1] == 0

        # The relay reads on for the provider's usage for USAGE_DRAIN_SECONDS after the buyer left.
        await await_until(back_to_zero, USAGE_DRAIN_SECONDS + 3.0, "gateway_inflight_streams to drop to 0")


def test_every_listing_tried_has_its_outcomes_and_latency_by_public_id(metrics_text: str, market: Market) -> None:
    main = market.listings["main"]["public_id"]
    failing = market.listings["failing"]["public_id"]
    outcomes = {
        (labels["listing"], labels["outcome"]) for labels, _ in samples(metrics_text, "gateway_listing_attempts_total")
    }
    assert {(main, "ok"), (failing, "retryable")} <= outcomes
    latencies = {
        labels["listing"] for labels, _ in samples(metrics_text, "gateway_listing_upstream_duration_seconds_count")
    }
    assert {main, failing} <= latencies


# ---- GATEWAY_METRICS_TOKEN -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded(gateway_factory: GatewayFactory) -> Proc:
    """A gateway whose /metrics needs METRICS_TOKEN, logging at debug so whatever it could log, it does."""
    return gateway_factory.start(
        "gateway-metrics-token", GATEWAY_METRICS_TOKEN=METRICS_TOKEN, GATEWAY_LOG_LEVEL="debug"
    )


def test_without_a_metrics_token_configured_metrics_are_served_to_anyone(gateway: Proc) -> None:
    answer = httpx.get(gateway.url + "/metrics", timeout=10)
    assert answer.status_code == 200
    assert "gateway_inflight_streams" in answer.text


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-" + "0" * 40,
        METRICS_TOKEN,  # no scheme
        f"Basic {METRICS_TOKEN}",
        f"Bearer {METRICS_TOKEN}x",
        f"Bearer {METRICS_TOKEN[:-1]}",
    ],
    ids=["no header", "another token", "no scheme", "basic scheme", "one character more", "one character less"],
)
def test_with_a_metrics_token_a_scrape_without_it_gets_401_and_no_metric(
    guarded: Proc, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = httpx.get(guarded.url + "/metrics", headers=headers, timeout=10)
    assert_openai_error(answer, 401, "invalid_api_key")
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "gateway_" not in answer.text
    assert METRICS_TOKEN not in answer.text
    assert not any(METRICS_TOKEN in value for value in answer.headers.values())


def test_with_a_metrics_token_a_scrape_with_it_gets_the_metrics(guarded: Proc) -> None:
    answer = httpx.get(guarded.url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    assert "gateway_inflight_streams" in answer.text
    assert METRICS_TOKEN not in answer.text


def test_the_metrics_token_shows_in_no_log_line_and_no_other_answer(guarded: Proc) -> None:
    """The token sent right, wrong, and where other credentials go (/v1 and /api bearers, a query)."""
    attempts = [
        ("GET", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}"}),
        ("GET", "/metrics", {"Authorization": f"Bearer {METRICS_TOKEN}x"}),
        ("GET", "/metrics?token=" + METRICS_TOKEN, {}),
        ("POST", "/v1/chat/completions", {"Authorization": f"Bearer {METRICS_TOKEN}"}),
        ("GET", "/api/billing/balance", {"Authorization": f"Bearer {METRICS_TOKEN}"}),
        ("GET", "/readyz", {}),
    ]
    with httpx.Client(base_url=guarded.url, timeout=10) as http:
        for method, path, headers in attempts:
            answer = http.request(method, path, headers=headers, json={"model": "gpt-4o-mini", "messages": MESSAGES})
            assert METRICS_TOKEN not in answer.text, path
            assert not any(METRICS_TOKEN in value for value in answer.headers.values()), path
    # Log lines are written (unbuffered) while a request is handled, before its answer leaves.
    logs = guarded.logs()
    assert logs.strip(), "the gateway wrote no log at all"
    assert METRICS_TOKEN not in logs
