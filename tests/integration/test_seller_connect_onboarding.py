"""Stripe Connect onboarding for sellers: POST /api/seller/payout-account/onboarding and the payouts
page's "Set up payouts with Stripe" button. Stripe's two Connect endpoints are a fake at the
gateway's STRIPE_API_BASE (tests/support/stripe_connect.py: localstripe has neither); Postgres and
the app are real."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from aichat_gateway import audittrail
from aichat_gateway.config.settings import Settings, load_settings
from tests.support.emails import unique_email
from tests.support.scratch import TEST_REDIS_URL, TEST_SECRET
from tests.support.stripe_connect import FakeConnect, fake_connect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
PASSWORD = "correct horse battery staple"
API_BASE = "https://stripe-connect.test"
# Not shaped like a Stripe key, so the log redactor's patterns cannot hide a leak from these tests.
STRIPE_KEY = "plain-connect-key-0123456789abcdef"


@pytest.fixture
def settings(database_url: str, redis_prefix: str) -> Settings:
    return load_settings(
        DATABASE_URL=database_url,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=TEST_SECRET,
        GATEWAY_REDIS_PREFIX=redis_prefix,
        GATEWAY_WORKER_IN_SERVE=False,
        STRIPE_SECRET_KEY=STRIPE_KEY,
        STRIPE_API_BASE=API_BASE,
    )


@pytest.fixture
def stripe() -> Iterator[FakeConnect]:
    with fake_connect(API_BASE) as fake:
        yield fake


class Seller:
    def __init__(self, email: str, headers: dict[str, str]) -> None:
        self.email = email
        self.headers = headers


async def _sign_up(client: httpx.AsyncClient) -> Seller:
    email = unique_email("seller")
    assert (await client.post("/register", data={"email": email, "password": PASSWORD})).status_code == 303
    token = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()
    return Seller(email, {"authorization": f"Bearer {token['access_token']}"})


async def _start(client: httpx.AsyncClient, seller: Seller) -> httpx.Response:
    return await client.post("/api/seller/payout-account/onboarding", headers=seller.headers)


async def test_a_seller_without_an_account_gets_a_new_express_account_stored_and_a_link_to_onboard_it(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    seller = await _sign_up(client)
    started = await _start(client, seller)
    assert started.status_code == 201
    [account] = stripe.accounts
    assert started.json() == {
        "url": f"https://connect.stripe.com/setup/e/{account}/link1",
        "stripe_account_id": account,
    }
    assert stripe.accounts[account]["type"] == "express" and stripe.accounts[account]["email"] == seller.email
    stored = await client.get("/api/seller/payout-account", headers=seller.headers)
    assert stored.json()["stripe_account_id"] == account


async def test_the_link_brings_the_seller_back_to_the_payouts_page_or_to_a_fresh_link(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    await _start(client, await _sign_up(client))
    [link] = stripe.links
    assert link["type"] == "account_onboarding"
    assert link["return_url"] == "http://gateway.test/app/seller/payouts?connect=returned"
    assert link["refresh_url"] == "http://gateway.test/app/seller/payouts/connect"


async def test_asking_again_reuses_the_stored_account_and_makes_a_fresh_link(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    seller = await _sign_up(client)
    first = (await _start(client, seller)).json()
    second = await _start(client, seller)
    assert second.status_code == 201
    assert second.json()["stripe_account_id"] == first["stripe_account_id"]
    assert second.json()["url"] != first["url"]
    assert len(stripe.account_requests()) == 1 and len(stripe.links) == 2


async def test_an_account_entered_by_hand_is_the_one_onboarded(client: httpx.AsyncClient, stripe: FakeConnect) -> None:
    seller = await _sign_up(client)
    stripe.accounts["acct_1ExistingSeller"] = {"type": "express"}
    put = await client.put(
        "/api/seller/payout-account", json={"stripe_account_id": "acct_1ExistingSeller"}, headers=seller.headers
    )
    assert put.status_code == 200
    started = await _start(client, seller)
    assert started.json()["stripe_account_id"] == "acct_1ExistingSeller"
    assert stripe.account_requests() == []


async def test_a_stored_account_stripe_does_not_know_is_409_and_is_kept(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    seller = await _sign_up(client)
    await client.put("/api/seller/payout-account", json={"stripe_account_id": "acct_1NotOurs"}, headers=seller.headers)
    refused = await _start(client, seller)
    assert refused.status_code == 409
    assert "acct_1NotOurs" in refused.json()["error"]["message"] and STRIPE_KEY not in refused.text
    stored = await client.get("/api/seller/payout-account", headers=seller.headers)
    assert stored.json()["stripe_account_id"] == "acct_1NotOurs" and stripe.account_requests() == []


async def test_two_requests_at_once_make_one_account_for_the_seller(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    seller = await _sign_up(client)
    both = await asyncio.gather(_start(client, seller), _start(client, seller))
    assert [r.status_code for r in both] == [201, 201]
    [account] = stripe.accounts
    assert {r.json()["stripe_account_id"] for r in both} == {account}
    assert len({r.headers["idempotency-key"] for r in stripe.account_requests()}) == 1
    stored = await client.get("/api/seller/payout-account", headers=seller.headers)
    assert stored.json()["stripe_account_id"] == account


async def test_two_sellers_get_two_accounts(client: httpx.AsyncClient, stripe: FakeConnect) -> None:
    first = (await _start(client, await _sign_up(client))).json()["stripe_account_id"]
    second = (await _start(client, await _sign_up(client))).json()["stripe_account_id"]
    assert first != second and set(stripe.accounts) == {first, second}


async def test_creating_and_linking_an_account_is_in_the_sellers_audit_trail(
    client: httpx.AsyncClient, stripe: FakeConnect, db: asyncpg.Connection
) -> None:
    seller = await _sign_up(client)
    account = (await _start(client, seller)).json()["stripe_account_id"]
    await _start(client, seller)  # a second link links nothing new
    seller_id = str(await db.fetchval("SELECT id FROM users WHERE email = $1", seller.email))
    [event] = await audittrail.events(db, subject_id=seller_id, action_prefix=audittrail.PAYOUT_ACCOUNT)
    assert (event.actor_id, event.target_id) == (seller_id, account)
    assert event.detail == {"stripe_account_id": account, "how": "onboarding"}
    assert event.label == "Payout account linked"


async def test_without_a_session_there_is_no_link(client: httpx.AsyncClient, stripe: FakeConnect) -> None:
    refused = await client.post("/api/seller/payout-account/onboarding")
    assert refused.status_code == 401
    assert stripe.requests == []


async def test_a_stripe_refusal_is_503_and_stores_nothing_and_never_shows_the_key(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    seller = await _sign_up(client)
    stripe.refusal = f"Connect is not enabled for {STRIPE_KEY}"
    refused = await _start(client, seller)
    assert refused.status_code == 503
    assert STRIPE_KEY not in refused.text
    stored = await client.get("/api/seller/payout-account", headers=seller.headers)
    assert stored.json()["stripe_account_id"] is None


class TestWithoutStripe:
    @pytest.fixture
    def settings(self, database_url: str, redis_prefix: str) -> Settings:
        return load_settings(
            DATABASE_URL=database_url,
            REDIS_URL=TEST_REDIS_URL,
            GATEWAY_SECRET_KEY=TEST_SECRET,
            GATEWAY_REDIS_PREFIX=redis_prefix,
            GATEWAY_WORKER_IN_SERVE=False,
        )

    async def test_the_api_answers_503(self, client: httpx.AsyncClient) -> None:
        refused = await _start(client, await _sign_up(client))
        assert refused.status_code == 503
        assert "not configured" in refused.text

    async def test_the_page_explains_the_manual_method_and_offers_no_stripe_button(
        self, client: httpx.AsyncClient
    ) -> None:
        await _sign_up(client)
        page = await client.get("/app/seller/payouts")
        assert "pays sellers by hand" in page.text
        assert "Set up payouts with Stripe" not in page.text


async def test_the_pages_button_sends_the_seller_to_stripes_onboarding(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    seller = await _sign_up(client)
    page = await client.get("/app/seller/payouts")
    assert "Set up payouts with Stripe" in page.text and 'action="/app/seller/payouts/connect"' in page.text
    went = await client.post("/app/seller/payouts/connect", data={"csrf_token": client.cookies["aichat_csrf"]})
    [account] = stripe.accounts
    assert (went.status_code, went.headers["location"]) == (
        303,
        f"https://connect.stripe.com/setup/e/{account}/link1",
    )
    stored = await client.get("/api/seller/payout-account", headers=seller.headers)
    assert stored.json()["stripe_account_id"] == account


async def test_a_post_without_the_csrf_token_is_not_the_sellers_and_reaches_no_stripe(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    await _sign_up(client)
    refused = await client.post("/app/seller/payouts/connect", data={})
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
    assert stripe.requests == []


async def test_an_expired_link_is_replaced_by_a_fresh_one_for_the_same_account(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    await _sign_up(client)
    await client.post("/app/seller/payouts/connect", data={"csrf_token": client.cookies["aichat_csrf"]})
    refreshed = await client.get("/app/seller/payouts/connect")
    [account] = stripe.accounts
    assert (refreshed.status_code, refreshed.headers["location"]) == (
        303,
        f"https://connect.stripe.com/setup/e/{account}/link2",
    )


async def test_a_get_of_the_refresh_url_never_creates_an_account(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    await _sign_up(client)
    sent_back = await client.get("/app/seller/payouts/connect")
    assert (sent_back.status_code, sent_back.headers["location"]) == (303, "/app/seller/payouts")
    assert stripe.requests == []


async def test_back_from_stripe_the_page_says_onboarding_was_submitted_and_shows_the_account(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    await _sign_up(client)
    await client.post("/app/seller/payouts/connect", data={"csrf_token": client.cookies["aichat_csrf"]})
    [account] = stripe.accounts
    back = await client.get("/app/seller/payouts?connect=returned")
    assert "Stripe onboarding submitted" in back.text and account in back.text
    assert "Continue Stripe onboarding" in back.text


async def test_when_stripe_fails_the_page_says_so_and_keeps_the_manual_option(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    await _sign_up(client)
    stripe.refusal = f"Connect is not enabled for {STRIPE_KEY}"
    failed = await client.post("/app/seller/payouts/connect", data={"csrf_token": client.cookies["aichat_csrf"]})
    assert failed.status_code == 503
    assert "Stripe could not start the onboarding" in failed.text and 'role="alert"' in failed.text
    assert "Stripe account id" in failed.text
    assert STRIPE_KEY not in failed.text


async def test_on_the_page_an_unknown_stored_account_is_explained_next_to_the_account_id_field(
    client: httpx.AsyncClient, stripe: FakeConnect
) -> None:
    seller = await _sign_up(client)
    await client.put("/api/seller/payout-account", json={"stripe_account_id": "acct_1NotOurs"}, headers=seller.headers)
    refused = await client.post("/app/seller/payouts/connect", data={"csrf_token": client.cookies["aichat_csrf"]})
    assert refused.status_code == 409
    assert 'id="f-stripe_account_id-error"' in refused.text and "does not know acct_1NotOurs" in refused.text
    assert '<details class="more" open>' in refused.text


async def test_the_page_lets_the_form_redirect_to_stripe_connect(client: httpx.AsyncClient) -> None:
    await _sign_up(client)
    page = await client.get("/app/seller/payouts")
    assert "form-action 'self' https://connect.stripe.com" in page.headers["content-security-policy"]
