"""The buyer's billing pages in the browser: the live balance, adding funds through localstripe's
Stripe.js (its Card Element is plain text boxes named by their placeholders), the statement and
the usage, and their accessibility in each state."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import PASSWORD, Site, assert_accessible, new_email, register
from tests.support.gateways import GatewayFactory
from tests.support.localstripe import CARD_DECLINED, CARD_OK
from tests.support.processes import Processes
from tests.support.waiting import wait_until

CREDIT_WAIT_MS = 20_000  # localstripe sends its webhook about a second after the charge
SETTLE_WITHIN = 20.0  # the settlement worker in `serve` batches for a fraction of a second


def add_funds(page: Page, site: Site, amount: str) -> None:
    page.goto(site.at("/app/billing"))
    page.get_by_role("textbox", name="Amount (USD)").fill(amount)
    page.get_by_role("button", name="Add funds").click()
    expect(page.get_by_role("heading", name=f"Top-up of ${amount}")).to_be_visible()


def type_card(page: Page, number: str) -> None:
    page.get_by_role("textbox", name="number").fill(number)
    page.get_by_role("textbox", name="exp_month").fill("12")
    page.get_by_role("textbox", name="exp_year").fill("40")
    page.get_by_role("textbox", name="cvc").fill("123")
    page.get_by_role("textbox", name="postal_code").fill("10001")


def test_the_billing_page_shows_balance_held_and_available_in_a_live_region(page: Page, site: Site) -> None:
    register(page, site)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Billing").click()
    expect(page.get_by_role("heading", name="Billing", exact=True)).to_be_visible()
    region = page.get_by_role("region", name="Balance")
    expect(region.get_by_role("definition")).to_have_text(["$0.00", "$0.00", "$0.00"])
    expect(region.get_by_role("term")).to_have_text(["Balance", "Held", "Available"])
    expect(page.get_by_role("link", name="Billing")).to_have_attribute("aria-current", "page")
    assert_accessible(page)


def test_paying_10_dollars_by_card_credits_the_balance_when_the_webhook_lands(page: Page, site: Site) -> None:
    register(page, site)
    add_funds(page, site, "10.00")
    assert_accessible(page)
    type_card(page, CARD_OK)
    page.get_by_role("button", name="Pay $10.00").click()
    expect(page.get_by_text("Added $10.00 to your balance.")).to_be_visible(timeout=CREDIT_WAIT_MS)
    expect(page.get_by_role("region", name="Balance").get_by_text("$10.00").first).to_be_visible()
    assert_accessible(page)
    page.get_by_role("link", name="Back to billing").click()
    expect(page.get_by_role("region", name="Balance").get_by_role("definition").first).to_have_text("$10.00")


def test_a_declined_card_shows_stripes_error_and_the_balance_stays_the_same(page: Page, site: Site) -> None:
    register(page, site)
    add_funds(page, site, "10.00")
    type_card(page, CARD_DECLINED)
    page.get_by_role("button", name="Pay $10.00").click()
    expect(page.get_by_role("alert")).to_contain_text("declined")
    assert_accessible(page)
    page.goto(site.at("/app/billing"))
    expect(page.get_by_role("region", name="Balance").get_by_role("definition").first).to_have_text("$0.00")


def test_an_amount_below_the_minimum_is_refused_next_to_the_field_and_kept(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/billing"))
    amount = page.get_by_role("textbox", name="Amount (USD)")
    amount.fill("1.00")
    page.get_by_role("button", name="Add funds").click()
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text(re.compile("amount_usd must be between"))).to_be_visible()
    expect(amount).to_have_value("1.00")
    assert_accessible(page)


@pytest.fixture(scope="module")
def site_without_stripe(e2e_processes: Processes, site: Site) -> Iterator[Site]:
    """A second gateway on the same database, with no Stripe keys."""
    gateway = GatewayFactory(e2e_processes, site.settings).start(
        "e2e-gateway-no-stripe", GATEWAY_WORKER_IN_SERVE="0", GATEWAY_LOG_LEVEL="warning"
    )
    yield Site(url=gateway.url, settings=site.settings, fake_upstream_url=site.fake_upstream_url)


def test_without_stripe_the_page_says_top_ups_are_off_and_how_an_admin_credits(
    browser: Browser, site_without_stripe: Site
) -> None:
    context = browser.new_context(base_url=site_without_stripe.url)
    try:
        page = context.new_page()
        register(page, site_without_stripe)
        page.goto(site_without_stripe.at("/app/billing"))
        expect(page.get_by_text("Card top-ups are off on this gateway")).to_be_visible()
        expect(page.get_by_text("/api/admin/credits")).to_be_visible()
        expect(page.get_by_role("button", name="Add funds")).to_have_count(0)
        assert_accessible(page)
    finally:
        context.close()


# ---- statements ------------------------------------------------------------------------------


def test_a_new_buyers_transactions_and_usage_pages_say_what_to_do_first(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/billing"))
    page.get_by_role("navigation", name="Billing").get_by_role("link", name="Transactions").click()
    expect(page.get_by_role("heading", name="Transactions", exact=True)).to_be_visible()
    expect(page.get_by_text("No entries yet.")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("navigation", name="Billing").get_by_role("link", name="Usage").click()
    expect(page.get_by_text("No requests yet.")).to_be_visible()
    assert_accessible(page)


def test_a_bad_date_filter_is_shown_next_to_its_field_and_kept(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/billing/transactions?since=2026-02-30"))
    expect(page.get_by_label("From")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text("Enter a date as YYYY-MM-DD.")).to_be_visible()
    assert_accessible(page)


def _seller_listing(site: Site, model: str) -> None:
    """A seller lists the fake upstream for `model`, over the API as a seller would."""
    email = new_email("seller")
    assert httpx.post(site.at("/api/auth/register"), json={"email": email, "password": PASSWORD}).status_code == 201
    token = httpx.post(site.at("/api/auth/login"), json={"email": email, "password": PASSWORD}).json()["access_token"]
    listing = {
        "name": f"billing-e2e-{model}",
        "provider": "openai",
        "base_url": site.fake_upstream_url,
        "api_key": "sk-test-seller-" + secrets.token_hex(16),
        "models": [{"model": model, "upstream_model": "gpt-4o-mini"}],
        "pricing": {"input_usd_per_million": "1000", "output_usd_per_million": "2000"},
        "attest_resale": True,
    }
    created = httpx.post(
        site.at("/api/marketplace/listings"), json=listing, headers={"authorization": f"Bearer {token}"}
    )
    assert created.status_code == 201, created.text


def _api(page: Page, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """The API with the browser's own session cookie and CSRF token, as the pages' scripts call it."""
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "aichat_csrf")
    answer = page.request.fetch(path, method=method, data=body, headers={"x-csrf-token": csrf})
    assert answer.ok, answer.text()
    return answer.json()


def test_sign_up_create_a_key_pay_by_card_call_a_model_and_see_the_request_and_the_new_balance(
    page: Page, site: Site
) -> None:
    model = f"billing-e2e-{secrets.token_hex(4)}"
    _seller_listing(site, model)
    register(page, site)
    page.goto(site.at("/app/keys"))
    page.get_by_role("textbox", name="Name").fill("billing e2e key")
    page.get_by_role("button", name="Create key").click()
    created = page.get_by_role("region", name="Key “billing e2e key” created")
    key = created.get_by_text(re.compile(r"^agw-[A-Za-z0-9_-]{43}$")).inner_text()
    add_funds(page, site, "10.00")
    type_card(page, CARD_OK)
    page.get_by_role("button", name="Pay $10.00").click()
    expect(page.get_by_text("Added $10.00 to your balance.")).to_be_visible(timeout=CREDIT_WAIT_MS)
    headers = {"authorization": f"Bearer {key}"}
    chat = {"model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}
    answer = httpx.post(site.at("/v1/chat/completions"), json=chat, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    wait_until(lambda: _api(page, "GET", "/api/billing/usage")["data"], SETTLE_WITHIN, "the request to settle")

    page.goto(site.at("/app/billing/usage"))
    row = page.get_by_role("row").filter(has_text=model)
    expect(row).to_contain_text("billing e2e key")
    assert_accessible(page)
    page.goto(site.at("/app/billing/transactions"))
    expect(page.get_by_role("row").filter(has_text="topup")).to_contain_text("10.00")
    expect(page.get_by_role("row").filter(has_text=model)).to_be_visible()
    expect(page.get_by_role("link", name="Download CSV")).to_have_attribute("href", "/api/billing/transactions.csv")
    assert_accessible(page)
    page.goto(site.at("/app/billing"))
    shown = page.get_by_role("region", name="Balance").get_by_role("definition").first
    expect(shown).not_to_have_text("$10.00")
    expect(shown).to_have_text(re.compile(r"^\$9\.\d+$"))


# ---- saved cards ---------------------------------------------------------------------------------


def test_a_card_that_paid_is_saved_as_the_default_and_pays_the_next_top_up_in_one_click(page: Page, site: Site) -> None:
    register(page, site)
    add_funds(page, site, "10.00")
    type_card(page, CARD_OK)
    page.get_by_role("button", name="Pay $10.00").click()
    expect(page.get_by_text("Added $10.00 to your balance.")).to_be_visible(timeout=CREDIT_WAIT_MS)
    page.goto(site.at("/app/billing"))
    cards = page.get_by_role("region", name="Saved cards")
    expect(cards.get_by_role("listitem")).to_have_count(1)
    expect(cards.get_by_role("listitem")).to_contain_text("•••• 4242")
    expect(cards.get_by_text("default")).to_be_visible()
    assert_accessible(page)

    add_funds(page, site, "15.00")
    page.get_by_role("button", name="Pay $15.00 with Visa •••• 4242").click()
    expect(page.get_by_text("Added $15.00 to your balance.")).to_be_visible(timeout=CREDIT_WAIT_MS)
    page.get_by_role("link", name="Back to billing").click()
    expect(page.get_by_role("region", name="Balance").get_by_role("definition").first).to_have_text("$25.00")


def test_a_card_added_on_its_own_page_is_listed_and_can_be_removed_after_a_confirmation(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/billing"))
    expect(page.get_by_text("No saved cards.")).to_be_visible()
    page.get_by_role("link", name="Add a card").click()
    assert_accessible(page)
    type_card(page, CARD_OK)
    page.get_by_role("button", name="Save card").click()
    expect(page.get_by_role("status").filter(has_text="The card was saved.")).to_be_visible()
    cards = page.get_by_role("region", name="Saved cards")
    expect(cards.get_by_role("listitem")).to_contain_text("•••• 4242")
    cards.get_by_label("Remove Visa •••• 4242").click()
    assert_accessible(page)
    page.get_by_role("button", name="Yes, remove •••• 4242").click()
    expect(page.get_by_role("status").filter(has_text="The card was removed.")).to_be_visible()
    expect(page.get_by_text("No saved cards.")).to_be_visible()


# ---- auto-recharge -------------------------------------------------------------------------------


def test_auto_recharge_is_off_by_default_and_its_settings_are_kept_after_saving(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/billing"))
    section = page.get_by_role("region", name="Auto-recharge")
    expect(section.get_by_role("checkbox", name="Turn on auto-recharge")).not_to_be_checked()
    section.get_by_role("checkbox", name="Turn on auto-recharge").check()
    section.get_by_role("textbox", name="When available falls below (USD)").fill("5.00")
    section.get_by_role("textbox", name="Top up by (USD)").fill("20.00")
    section.get_by_role("button", name="Save auto-recharge").click()
    expect(page.get_by_role("status").filter(has_text="Auto-recharge settings saved.")).to_be_visible()
    expect(section.get_by_role("checkbox", name="Turn on auto-recharge")).to_be_checked()
    expect(section.get_by_role("textbox", name="Top up by (USD)")).to_have_value("20.00")
    assert_accessible(page)


def test_an_auto_recharge_amount_below_the_minimum_is_refused_next_to_its_field(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/billing"))
    section = page.get_by_role("region", name="Auto-recharge")
    section.get_by_role("checkbox", name="Turn on auto-recharge").check()
    section.get_by_role("textbox", name="When available falls below (USD)").fill("5.00")
    section.get_by_role("textbox", name="Top up by (USD)").fill("1.00")
    section.get_by_role("button", name="Save auto-recharge").click()
    amount = page.get_by_role("textbox", name="Top up by (USD)")
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(amount).to_have_value("1.00")
    assert_accessible(page)
