"""Where Stripe is configured, the payouts page also takes the id of a Stripe Connect account the
seller already has (the API's PUT /api/seller/payout-account rule and store), next to Connect
onboarding (test_seller_connect_onboarding.py)."""

from __future__ import annotations

import httpx
import pytest

from aichat_gateway.config.settings import Settings, load_settings
from tests.support.emails import unique_email
from tests.support.scratch import TEST_REDIS_URL, TEST_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(database_url: str, redis_prefix: str) -> Settings:
    return load_settings(
        DATABASE_URL=database_url,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=TEST_SECRET,
        GATEWAY_REDIS_PREFIX=redis_prefix,
        GATEWAY_WORKER_IN_SERVE=False,
        STRIPE_SECRET_KEY="sk_test_not_called",
    )


async def _sign_up(client: httpx.AsyncClient) -> dict[str, str]:
    email = unique_email("seller")
    assert (await client.post("/register", data={"email": email, "password": PASSWORD})).status_code == 303
    token = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"authorization": f"Bearer {token['access_token']}"}


async def test_a_malformed_account_id_is_refused_next_to_its_field_and_nothing_is_saved(
    client: httpx.AsyncClient,
) -> None:
    headers = await _sign_up(client)
    refused = await client.post(
        "/app/seller/payout-account",
        data={"stripe_account_id": "not-an-account", "csrf_token": client.cookies["aichat_csrf"]},
    )
    assert refused.status_code == 400
    assert 'id="f-stripe_account_id-error"' in refused.text
    assert 'value="not-an-account"' in refused.text
    saved = await client.get("/api/seller/payout-account", headers=headers)
    assert saved.json()["stripe_account_id"] is None


async def test_a_connect_account_saved_on_the_page_is_the_one_payouts_go_to(client: httpx.AsyncClient) -> None:
    headers = await _sign_up(client)
    saved = await client.post(
        "/app/seller/payout-account",
        data={"stripe_account_id": "acct_1032D82eZvKYlo2C", "csrf_token": client.cookies["aichat_csrf"]},
    )
    assert (saved.status_code, saved.headers["location"]) == (303, "/app/seller/payouts?done=account")
    account = await client.get("/api/seller/payout-account", headers=headers)
    assert account.json()["stripe_account_id"] == "acct_1032D82eZvKYlo2C"
    page = await client.get("/app/seller/payouts?done=account")
    assert "acct_1032D82eZvKYlo2C" in page.text and "Stripe account saved" in page.text
