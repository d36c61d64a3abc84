"""The billing pages as HTML (the ASGI app, real Postgres and Redis): what they show and refuse.
Paying by card runs in the browser against localstripe (tests/e2e/test_billing_pages.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr

from aichat_gateway.config.settings import Settings
from aichat_gateway.server.app import create_app
from tests.support.emails import unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
PASSWORD = "correct horse battery staple"


async def _register(client: httpx.AsyncClient) -> str:
    email = unique_email()
    response = await client.post("/register", data={"email": email, "password": PASSWORD})
    assert response.status_code == 303, response.text
    return email


async def test_the_billing_page_shows_the_balance_in_a_polled_live_region(client: httpx.AsyncClient) -> None:
    await _register(client)
    page = await client.get("/app/billing")
    assert page.status_code == 200, page.text
    assert 'aria-live="polite"' in page.text and 'hx-get="/app/billing/balance?seen=0.0"' in page.text


@pytest.fixture
async def stripe_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with Stripe keys (nothing answers at STRIPE_API_BASE: pages that only render need none)."""
    configured = settings.model_copy(
        update={"stripe_secret_key": SecretStr("sk_test_" + "x" * 24), "stripe_publishable_key": "pk_test_page"}
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
            yield c


async def test_with_stripe_the_billing_page_offers_the_amount_form(stripe_client: httpx.AsyncClient) -> None:
    await _register(stripe_client)
    page = await stripe_client.get("/app/billing")
    assert page.status_code == 200, page.text
    assert 'name="amount_usd"' in page.text and 'name="csrf_token"' in page.text


async def test_without_stripe_the_billing_page_says_top_ups_are_off(client: httpx.AsyncClient) -> None:
    await _register(client)
    page = await client.get("/app/billing")
    assert "Card top-ups are off" in page.text and 'name="amount_usd"' not in page.text


async def test_the_live_balance_answers_204_while_it_is_unchanged(client: httpx.AsyncClient) -> None:
    await _register(client)
    same = await client.get("/app/billing/balance?seen=0.0")
    assert same.status_code == 204


async def test_the_live_balance_answers_the_new_figures_when_they_changed(client: httpx.AsyncClient) -> None:
    await _register(client)
    changed = await client.get("/app/billing/balance?seen=5000000.0")
    assert changed.status_code == 200, changed.text
    assert "$0.00" in changed.text and 'hx-get="/app/billing/balance?seen=0.0"' in changed.text
