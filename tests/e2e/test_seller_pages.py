"""The seller's pages in the browser: list an endpoint on the fake provider through the form, see it
active, change it, pause and delete it; bad input shown next to its field with nothing created; a
buyer's call through /v1 showing as the seller's earning once the gateway settled it; payouts."""

from __future__ import annotations

import re
import secrets

import httpx
from playwright.sync_api import Page, expect

from tests.support.browser import PASSWORD, Site, assert_accessible, register
from tests.support.market import fund
from tests.support.waiting import wait_until


def unique_model() -> str:
    """A model only this test's listing serves, so the e2e site's other listings never take its calls."""
    return f"e2e-seller-{secrets.token_hex(4)}"


def fill_listing_form(page: Page, site: Site, name: str, model: str) -> str:
    """The new-listing form filled for the fake provider; returns the provider key typed."""
    key = "sk-e2e-" + secrets.token_hex(12)
    page.goto(site.at("/app/seller/listings/new"))
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("combobox", name="Provider").select_option("openai")
    page.get_by_role("textbox", name="Base URL").fill(site.fake_upstream_url)
    page.get_by_label("API key").fill(key)
    page.get_by_role("textbox", name="Models").fill(f"{model}=gpt-4o-mini")
    page.get_by_role("radio", name=re.compile("Explicit prices")).check()
    page.get_by_role("textbox", name="Input USD per 1M tokens").fill("100")
    page.get_by_role("textbox", name="Output USD per 1M tokens").fill("200")
    page.get_by_role("checkbox", name="I may resell access through this key").check()
    return key


def create_listing(page: Page, site: Site, name: str, model: str) -> None:
    fill_listing_form(page, site, name, model)
    page.get_by_role("button", name="Create listing").click()
    expect(page).to_have_url(site.at("/app/seller?done=created"))


def test_a_seller_lists_an_endpoint_through_the_form_and_sees_it_active(page: Page, site: Site) -> None:
    register(page, site)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Seller").click()
    expect(page.get_by_role("heading", name="Seller", exact=True)).to_be_visible()
    expect(page.get_by_text("You have no listings yet.")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("link", name="New listing").click()
    assert_accessible(page)
    create_listing(page, site, "My fake endpoint", unique_model())
    expect(page.get_by_role("status")).to_have_text(re.compile("Listing created"))
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="My fake endpoint"))
    expect(row.get_by_role("cell").nth(1)).to_have_text(re.compile("active"))
    expect(row.get_by_role("cell").nth(2)).to_have_text(re.compile("closed"))
    expect(page.get_by_role("cell", name="Listing created")).to_be_visible()
    assert_accessible(page)


def test_a_form_without_attestation_and_with_a_bad_price_shows_field_errors_and_creates_nothing(
    page: Page, site: Site
) -> None:
    register(page, site)
    model = unique_model()
    key = fill_listing_form(page, site, "Not yet", model)
    page.get_by_role("checkbox", name="I may resell access through this key").uncheck()
    page.get_by_role("textbox", name="Input USD per 1M tokens").fill("cheap")
    page.get_by_role("button", name="Create listing").click()
    expect(page.get_by_role("checkbox", name="I may resell access through this key")).to_have_attribute(
        "aria-invalid", "true"
    )
    expect(page.get_by_text(re.compile("attest_resale must be true"))).to_be_visible()
    expect(page.get_by_role("textbox", name="Input USD per 1M tokens")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("textbox", name="Name")).to_have_value("Not yet")
    expect(page.get_by_role("textbox", name="Models")).to_have_value(f"{model}=gpt-4o-mini")
    expect(page.get_by_role("textbox", name="Input USD per 1M tokens")).to_have_value("cheap")
    expect(page.get_by_label("API key")).to_have_value("")
    assert key not in page.content()
    assert_accessible(page)
    page.goto(site.at("/app/seller"))
    expect(page.get_by_text("You have no listings yet.")).to_be_visible()


def test_a_new_base_url_without_a_new_key_is_refused_next_to_the_key(page: Page, site: Site) -> None:
    register(page, site)
    create_listing(page, site, "Keyed here", unique_model())
    page.get_by_role("link", name="Keyed here").click()
    page.get_by_role("textbox", name="Base URL").fill(site.fake_upstream_url.replace("/v1", "/v2"))
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_label("New API key")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text(re.compile("a new base_url needs api_key"))).to_be_visible()
    assert_accessible(page)


def test_a_seller_renames_pauses_resumes_and_deletes_a_listing_after_confirming(page: Page, site: Site) -> None:
    register(page, site)
    create_listing(page, site, "Short lived", unique_model())
    page.get_by_role("link", name="Short lived").click()
    assert_accessible(page)
    page.get_by_role("textbox", name="Name").fill("Renamed")
    page.get_by_role("textbox", name="Requests per minute").fill("30")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Changes saved.")
    expect(page.get_by_role("heading", name="Renamed", exact=True)).to_be_visible()
    expect(page.get_by_text(re.compile(r"rpm\s+0\s*/\s*30"))).to_be_visible()
    page.get_by_role("button", name="Pause listing").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("Listing paused"))
    page.get_by_role("button", name="Resume listing").click()
    expect(page.get_by_role("status")).to_have_text("Listing resumed.")
    page.get_by_role("link", name="Delete listing").click()
    expect(page.get_by_role("heading", name="Delete Renamed?")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("button", name="Delete for good").click()
    expect(page.get_by_role("status")).to_have_text(re.compile("Listing deleted"))
    expect(page.get_by_role("link", name="Renamed")).to_have_count(0)
    expect(page.get_by_role("cell", name="Listing deleted")).to_be_visible()


def test_a_buyers_call_shows_as_the_sellers_earning_after_settlement(page: Page, site: Site) -> None:
    seller_email = register(page, site)
    model = unique_model()
    create_listing(page, site, "Earning endpoint", model)
    buyer_key = _funded_buyer_key(site)
    wait_until(lambda: _serves(site, buyer_key, model), 10, f"{model} routable", interval=0.05)
    answer = httpx.post(
        site.at("/v1/chat/completions"),
        json={"model": model, "messages": [{"role": "user", "content": "hello"}]},
        headers={"authorization": f"Bearer {buyer_key}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    seller_token = _api_token(site, seller_email)
    wait_until(lambda: _earned(site, seller_token) != "0.000000", 15, "the call settled", interval=0.1)
    page.goto(site.at("/app/seller/earnings"))
    earned = _earned(site, seller_token)
    shown = earned.rstrip("0")
    expect(page.get_by_role("row").filter(has_text="Earning endpoint")).to_contain_text(shown)
    expect(page.get_by_role("table", name=re.compile("Earnings per UTC day"))).to_contain_text(shown)
    expect(page.get_by_role("img", name=re.compile("Bar chart of earnings per day"))).to_be_visible()
    assert_accessible(page)


def test_a_payout_below_the_minimum_is_refused_next_to_the_amount(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/seller/payouts"))
    expect(page.get_by_text("No payouts yet.")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("textbox", name="Amount (USD)").fill("1")
    page.get_by_role("button", name="Request payout").click()
    amount = page.get_by_role("textbox", name="Amount (USD)")
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(amount).to_have_value("1")
    expect(page.get_by_text(re.compile("the smallest payout is"))).to_be_visible()
    assert_accessible(page)


# ---- the buyer's side, over the API -----------------------------------------------------------


def _api_token(site: Site, email: str) -> str:
    login = httpx.post(site.at("/api/auth/login"), json={"email": email, "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    token: str = login.json()["access_token"]
    return token


def _funded_buyer_key(site: Site) -> str:
    email = f"buyer-{secrets.token_hex(6)}@e2e.example.com"
    created = httpx.post(site.at("/api/auth/register"), json={"email": email, "password": PASSWORD}, timeout=10)
    assert created.status_code == 201, created.text
    fund(site.settings, created.json()["id"], "10")
    token = _api_token(site, email)
    key = httpx.post(
        site.at("/api/keys"), json={"name": "e2e"}, headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    assert key.status_code == 201, key.text
    secret: str = key.json()["key"]
    return secret


def _serves(site: Site, key: str, model: str) -> bool:
    models = httpx.get(site.at("/v1/models"), headers={"authorization": f"Bearer {key}"}, timeout=5)
    return model in {m["id"] for m in models.json()["data"]}


def _earned(site: Site, token: str) -> str:
    answer = httpx.get(site.at("/api/seller/earnings"), headers={"authorization": f"Bearer {token}"}, timeout=5)
    assert answer.status_code == 200, answer.text
    earned: str = answer.json()["earned_usd"]
    return earned
