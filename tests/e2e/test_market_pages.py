"""The marketplace browser in a real browser: offers per model, sorting, a model's page and the
quote for a prompt, each state checked by axe-core. Three sellers list gpt-4o-mini on the fake
provider at different prices; other tests may list it too, so rows are found by offer id."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.support.browser import Site, assert_accessible, register
from tests.support.market_seed import SeededListing, seller_with_listing

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def offers(site: Site) -> list[SeededListing]:
    """Cheapest first."""
    return [
        seller_with_listing(site, "0.11", "0.44"),
        seller_with_listing(site, "0.22", "0.88"),
        seller_with_listing(site, "0.33", "1.32"),
    ]


def offers_table(page: Page) -> Locator:
    return page.get_by_role("table", name=re.compile(f"offers for {MODEL};"))


def shown_order(page: Page, offers: list[SeededListing]) -> list[str]:
    """The seeded offers' ids in the order the table shows them."""
    texts = offers_table(page).get_by_role("row").all_inner_texts()
    wanted = {o.offer_id for o in offers}
    return [ident for text in texts for ident in wanted if ident in text]


def row_of(page: Page, offer: SeededListing) -> Locator:
    return offers_table(page).get_by_role("row").filter(has_text=offer.offer_id)


def test_the_market_shows_each_offer_with_its_prices(page: Page, site: Site, offers: list[SeededListing]) -> None:
    register(page, site)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Market").click()
    expect(page.get_by_role("heading", name="Market", level=1)).to_be_visible()
    for seeded in offers:
        row = row_of(page, seeded)
        expect(row).to_contain_text(f"${seeded.input_usd_per_million}")
        expect(row).to_contain_text(f"${seeded.output_usd_per_million}")
        expect(row).to_contain_text("active")
    assert_accessible(page)


def test_sorting_by_input_price_turns_the_order_around(page: Page, site: Site, offers: list[SeededListing]) -> None:
    register(page, site)
    page.goto(site.at("/app/market"))
    page.get_by_label("Model").select_option(MODEL)
    page.get_by_role("button", name="Show offers").click()
    cheapest_first = [o.offer_id for o in offers]
    assert shown_order(page, offers) == cheapest_first
    header = offers_table(page).get_by_role("columnheader", name="Sort by Input price")
    expect(header).to_have_attribute("aria-sort", "ascending")

    header.get_by_role("link", name="Sort by Input price").click()
    header = offers_table(page).get_by_role("columnheader", name="Sort by Input price")
    expect(header).to_have_attribute("aria-sort", "descending")
    assert shown_order(page, offers) == cheapest_first[::-1]
    expect(page.get_by_label("Model")).to_have_value(MODEL)  # the filter holds while sorting
    assert_accessible(page)


def test_a_model_nobody_sells_shows_what_to_do_next(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/market?model=nobody-sells-this"))
    expect(page.get_by_role("heading", name="No offers for nobody-sells-this")).to_be_visible()
    page.get_by_role("link", name="Show every model's offers").click()
    expect(page).to_have_url(site.at("/app/market"))
    assert_accessible(page)


def test_a_quote_shows_what_the_prompt_costs_at_each_offer(page: Page, site: Site, offers: list[SeededListing]) -> None:
    register(page, site)
    page.goto(site.at(f"/app/market/{MODEL}"))
    page.get_by_role("link", name=f"Price a prompt for {MODEL}").click()
    expect(page.get_by_label("Model")).to_have_value(MODEL)
    page.get_by_label("Prompt").fill("Say hello to the market.")
    page.get_by_label("Max tokens").fill("1000")
    page.get_by_role("button", name="Get quote").click()
    quote = page.get_by_role("region", name="Quote")
    expect(quote.get_by_role("status")).to_contain_text("up to 1,000 answer tokens")
    cheapest = quote.get_by_role("row").filter(has_text=offers[0].offer_id)
    # at most: the prompt's few tokens at $0.11/M plus 1,000 answer tokens at $0.44/M, about $0.00044
    expect(cheapest).to_contain_text(re.compile(r"\$0\.00044\d*"))
    expect(page.get_by_label("Prompt")).to_have_value("Say hello to the market.")
    assert_accessible(page)


def test_a_quote_without_a_prompt_is_refused_next_to_the_prompt(
    page: Page, site: Site, offers: list[SeededListing]
) -> None:
    register(page, site)
    page.goto(site.at("/app/market/quote"))
    page.get_by_label("Model").select_option(MODEL)
    page.get_by_label("Max tokens").fill("50")
    page.get_by_role("button", name="Get quote").click()
    prompt = page.get_by_label("Prompt")
    expect(prompt).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text("Type the prompt to price.")).to_be_visible()
    expect(page.get_by_label("Max tokens")).to_have_value("50")
    expect(page.get_by_role("region", name="Quote")).to_have_count(0)
    assert_accessible(page)


def test_a_models_page_shows_its_context_window_and_its_offers(
    page: Page, site: Site, offers: list[SeededListing]
) -> None:
    register(page, site)
    page.goto(site.at("/app/market"))
    page.get_by_role("link", name=MODEL, exact=True).click()
    expect(page.get_by_role("heading", name=MODEL, level=1)).to_be_visible()
    expect(page.get_by_text("128,000 tokens")).to_be_visible()
    for seeded in offers:
        expect(row_of(page, seeded)).to_contain_text(f"${seeded.input_usd_per_million}")
    assert_accessible(page)
