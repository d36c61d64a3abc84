"""The Stripe client's Connect onboarding calls (an Express account, an account link) against a fake
of Stripe's two endpoints (tests/support/stripe_connect.py; localstripe has neither), and the pure
rules of billing/connect.py."""

from __future__ import annotations

from urllib.parse import parse_qsl

import httpx
import orjson
import pytest
import respx

from aichat_gateway.billing.connect import account_idempotency_key, onboarding_urls
from aichat_gateway.billing.errors import Conflict, PaymentsUnavailable
from aichat_gateway.billing.stripe_client import StripeClient
from aichat_gateway.config.settings import Settings, load_settings
from aichat_gateway.dashboard.csp import content_security_policy
from tests.support.stripe_connect import fake_connect

pytestmark = pytest.mark.timeout(10)

API_BASE = "https://stripe.test"
# Not shaped like a Stripe key, so the log redactor's patterns cannot hide a leak from these tests.
API_KEY = "plain-stripe-key-0123456789abcdef"


def settings() -> Settings:
    return load_settings(GATEWAY_SECRET_KEY="k" * 32, STRIPE_SECRET_KEY=API_KEY, STRIPE_API_BASE=API_BASE)


async def test_an_express_account_is_asked_for_with_transfers_the_email_and_the_idempotency_key() -> None:
    with fake_connect(API_BASE) as fake:
        async with StripeClient.open(settings()) as stripe:
            account = await stripe.create_connect_account(
                email="seller@example.com", metadata={"account_id": "u1"}, idempotency_key="connect-account:u1"
            )
    [request] = fake.requests
    assert account.startswith("acct_") and account in fake.accounts
    assert request.headers["idempotency-key"] == "connect-account:u1"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert dict(parse_qsl(request.content.decode())) == {
        "type": "express",
        "capabilities[transfers][requested]": "true",
        "email": "seller@example.com",
        "metadata[account_id]": "u1",
    }


async def test_a_country_is_sent_only_when_given() -> None:
    with fake_connect(API_BASE) as fake:
        async with StripeClient.open(settings()) as stripe:
            await stripe.create_connect_account(email=None, metadata={}, idempotency_key="k", country="DE")
    form = dict(parse_qsl(fake.requests[0].content.decode()))
    assert form["country"] == "DE" and "email" not in form


async def test_an_account_link_is_an_onboarding_link_with_both_urls_and_its_url_is_returned() -> None:
    with fake_connect(API_BASE) as fake:
        async with StripeClient.open(settings()) as stripe:
            account = await stripe.create_connect_account(email=None, metadata={}, idempotency_key="k")
            url = await stripe.create_account_link(
                account_id=account, refresh_url="https://gw.test/r", return_url="https://gw.test/back"
            )
    assert url == f"https://connect.stripe.com/setup/e/{account}/link1"
    assert fake.links == [
        {"account": account, "refresh_url": "https://gw.test/r", "return_url": "https://gw.test/back",
         "type": "account_onboarding"}
    ]  # fmt: skip


async def test_a_link_for_an_account_stripe_does_not_know_is_a_conflict_about_that_account() -> None:
    with fake_connect(API_BASE):
        async with StripeClient.open(settings()) as stripe:
            with pytest.raises(Conflict, match="acct_1NotOurs") as raised:
                await stripe.create_account_link(
                    account_id="acct_1NotOurs", refresh_url="https://a", return_url="https://b"
                )
    assert raised.value.param == "stripe_account_id"


async def test_a_malformed_account_id_never_reaches_stripe() -> None:
    with fake_connect(API_BASE) as fake:
        async with StripeClient.open(settings()) as stripe:
            with pytest.raises(PaymentsUnavailable, match="malformed"):
                await stripe.create_account_link(
                    account_id="acct_1/../x", refresh_url="https://a", return_url="https://b"
                )
    assert fake.requests == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/accounts", {"object": "account"}),
        ("/v1/accounts", {"id": "cus_1", "object": "customer"}),
        ("/v1/account_links", {"object": "account_link", "url": "http://connect.stripe.com/plain"}),
        ("/v1/account_links", {"object": "account_link"}),
    ],
)
async def test_an_answer_of_another_shape_is_an_outage_not_a_link(path: str, body: dict[str, str]) -> None:
    with respx.mock(base_url=API_BASE) as router:
        router.post(path).mock(return_value=httpx.Response(200, json=body))
        async with StripeClient.open(settings()) as stripe:
            with pytest.raises(PaymentsUnavailable, match="unexpected shape"):
                if path == "/v1/accounts":
                    await stripe.create_connect_account(email=None, metadata={}, idempotency_key="k")
                else:
                    await stripe.create_account_link(
                        account_id="acct_123456", refresh_url="https://a", return_url="https://b"
                    )


async def test_a_stripe_error_that_echoes_the_secret_key_is_scrubbed_before_it_is_raised() -> None:
    echo = {"error": {"type": "invalid_request_error", "message": f"Connect is not enabled for {API_KEY}"}}
    with respx.mock(base_url=API_BASE) as router:
        router.post("/v1/accounts").mock(return_value=httpx.Response(400, content=orjson.dumps(echo)))
        async with StripeClient.open(settings()) as stripe:
            with pytest.raises(PaymentsUnavailable) as raised:
                await stripe.create_connect_account(email=None, metadata={}, idempotency_key="k")
    assert API_KEY not in str(raised.value) and "[redacted]" in str(raised.value)


def test_the_links_lead_back_to_the_payouts_page_on_the_gateway_the_seller_used() -> None:
    assert onboarding_urls("https://gw.example/") == (
        "https://gw.example/app/seller/payouts/connect",
        "https://gw.example/app/seller/payouts?connect=returned",
    )


def test_a_seller_has_one_idempotency_key_for_their_account() -> None:
    assert account_idempotency_key("u1") == account_idempotency_key("u1") != account_idempotency_key("u2")


def test_forms_may_lead_to_stripe_connect_only_where_onboarding_is_offered() -> None:
    assert "form-action 'self';" in content_security_policy(None)
    assert "form-action 'self' https://connect.stripe.com;" in content_security_policy(None, connect_onboarding=True)
