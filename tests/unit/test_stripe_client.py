"""billing's Stripe client on the Stripe SDK: what goes over the wire and how the SDK's answers and
errors come back, against an httpx MockTransport (no network). The top-up and payout suites cover
each call's fields; localstripe covers the SDK's own HTTP client end to end."""

from __future__ import annotations

import io

import httpx
import orjson
import pytest
import stripe

from aichat_gateway.billing.errors import PaymentsUnavailable
from aichat_gateway.billing.stripe_client import StripeClient, TransferRefused
from aichat_gateway.config.logging import configure_logging
from aichat_gateway.config.settings import Settings, load_settings

pytestmark = pytest.mark.timeout(10)

# Not shaped like a Stripe key, so the log redactor's patterns cannot hide a leak from these tests.
API_KEY = "plain-stripe-key-0123456789abcdef"
INTENT = {
    "id": "pi_1",
    "object": "payment_intent",
    "status": "requires_payment_method",
    "amount": 2000,
    "currency": "usd",
    "client_secret": "pi_1_secret_do_not_log_me",
    "metadata": {"account_id": "u1", "topup_id": "t1"},
}


def settings() -> Settings:
    return load_settings(GATEWAY_SECRET_KEY="k" * 32, STRIPE_SECRET_KEY=API_KEY, STRIPE_API_BASE="https://stripe.test")


def answering(*answers: httpx.Response, seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answers in turn (the last one again once they run out), recording every request."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[min(len(seen), len(answers)) - 1]

    return httpx.MockTransport(handle)


def json(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body), headers={"content-type": "application/json"})


async def create_intent(transport: httpx.MockTransport) -> object:
    async with StripeClient.open(settings(), transport=transport) as client:
        return await client.create_payment_intent(
            amount_cents=2000, currency="usd", customer="cus_1", metadata={"account_id": "u1"}, idempotency_key="k-1"
        )


async def test_every_call_names_the_api_version_the_sdk_was_built_for() -> None:
    seen: list[httpx.Request] = []
    await create_intent(answering(json(200, INTENT), seen=seen))
    [request] = seen
    assert request.headers["stripe-version"] == stripe.api_version
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert str(request.url) == "https://stripe.test/v1/payment_intents"


@pytest.mark.parametrize("status", [409, 500, 503])
async def test_an_answer_that_may_change_is_asked_once_more_under_the_same_idempotency_key(status: int) -> None:
    seen: list[httpx.Request] = []
    with pytest.raises(PaymentsUnavailable, match=f"Stripe answered {status}: busy"):
        await create_intent(answering(json(status, {"error": {"message": "busy"}}), seen=seen))
    assert [r.headers["idempotency-key"] for r in seen] == ["k-1", "k-1"]


async def test_an_answer_that_may_change_is_taken_when_the_second_ask_succeeds() -> None:
    seen: list[httpx.Request] = []
    intent = await create_intent(answering(json(500, {"error": {"message": "oops"}}), json(200, INTENT), seen=seen))
    assert getattr(intent, "id", None) == "pi_1" and len(seen) == 2


async def test_a_refused_transfer_is_not_asked_again() -> None:
    seen: list[httpx.Request] = []
    async with StripeClient.open(
        settings(), transport=answering(json(400, {"error": {"message": "no"}}), seen=seen)
    ) as c:
        answer = await c.create_transfer(
            amount_cents=100, currency="usd", destination="acct_1", metadata={}, idempotency_key="payout-p1"
        )
    assert answer == TransferRefused(400, "no") and len(seen) == 1


@pytest.mark.parametrize("status", [200, 502])
async def test_an_answer_that_is_not_json_is_unavailable(status: int) -> None:
    transport = answering(httpx.Response(status, text="<html>gateway</html>"), seen=[])
    with pytest.raises(PaymentsUnavailable, match=f"Stripe answered {status} without JSON"):
        await create_intent(transport)


async def test_an_unreachable_stripe_is_unavailable_naming_the_network_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(PaymentsUnavailable, match=r"Stripe did not answer \(ConnectError\)"):
        await create_intent(httpx.MockTransport(refuse))


@pytest.mark.parametrize("answer", [json(200, INTENT), json(401, {"error": {"message": f"Invalid key {API_KEY}"}})])
async def test_the_sdks_own_log_lines_never_reach_ours(answer: httpx.Response) -> None:
    """The SDK logs the bodies it sends and gets and Stripe's error texts at info and debug."""
    logs = io.StringIO()
    configure_logging("debug", True, stream=logs)
    try:
        await create_intent(answering(answer, seen=[]))
    except PaymentsUnavailable as exc:
        assert API_KEY not in exc.message
    written = logs.getvalue()
    assert API_KEY not in written and "do_not_log_me" not in written and "payment_intents" not in written
