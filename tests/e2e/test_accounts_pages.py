"""Sign-up, log-in and log-out in the browser, the error pages, and their accessibility."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.support.browser import PASSWORD, Site, assert_accessible, log_in, new_email, register


def test_a_visitor_to_the_root_is_sent_to_the_login_page(page: Page, site: Site) -> None:
    page.goto(site.at("/"))
    expect(page).to_have_url(site.at("/login"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    expect(page.get_by_role("link", name="Create an account")).to_have_attribute("href", "/register")
    assert_accessible(page)


def test_the_register_page_offers_email_password_and_create_account(page: Page, site: Site) -> None:
    page.goto(site.at("/register"))
    expect(page.get_by_role("textbox", name="Email")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_visible()
    expect(page.get_by_role("button", name="Create account")).to_be_visible()
    assert_accessible(page)


def test_creating_an_account_signs_in_and_shows_the_overview(page: Page, site: Site) -> None:
    email = register(page, site)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.get_by_text(email)).to_be_visible()
    assert_accessible(page)


def test_a_short_password_is_refused_next_to_its_field_and_the_email_is_kept(page: Page, site: Site) -> None:
    email = new_email()
    page.goto(site.at("/register"))
    page.get_by_role("textbox", name="Email").fill(email)
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Create account").click()
    password = page.get_by_label("Password")
    expect(password).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text(re.compile("password must be at least"))).to_be_visible()
    expect(page.get_by_role("textbox", name="Email")).to_have_value(email)
    expect(password).to_have_value("")
    assert_accessible(page)


def test_registering_a_taken_email_says_so_next_to_the_email(page: Page, site: Site, browser_context_b: Page) -> None:
    email = register(browser_context_b, site)
    page.goto(site.at("/register"))
    page.get_by_role("textbox", name="Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("textbox", name="Email")).to_have_attribute("aria-invalid", "true")
    expect(page).to_have_url(site.at("/register"))


def test_a_wrong_password_is_an_alert_and_nothing_more(page: Page, site: Site, browser_context_b: Page) -> None:
    email = register(browser_context_b, site)
    page.goto(site.at("/login"))
    page.get_by_role("textbox", name="Email").fill(email)
    page.get_by_label("Password").fill("not the password at all")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong e-mail or password.")
    expect(page.get_by_role("textbox", name="Email")).to_have_value(email)
    assert_accessible(page)


def test_a_page_that_needs_a_login_goes_to_login_and_back(page: Page, site: Site, browser_context_b: Page) -> None:
    email = register(browser_context_b, site)
    page.goto(site.at("/app?from=test"))
    expect(page).to_have_url(re.compile(r"/login\?next=/app%3Ffrom%3Dtest$"))
    log_in(page, site, email, here=True)
    expect(page).to_have_url(site.at("/app?from=test"))


def test_logging_out_ends_the_session_and_the_console_asks_for_a_login_again(page: Page, site: Site) -> None:
    register(page, site)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(site.at("/login"))
    page.goto(site.at("/app"))
    expect(page).to_have_url(re.compile(r"/login\?next="))


def test_an_unknown_page_is_a_themed_404(page: Page, site: Site) -> None:
    response = page.goto(site.at("/no-such-page"))
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    assert_accessible(page)


def test_the_skip_link_is_the_first_stop_and_moves_focus_to_the_content(page: Page, site: Site) -> None:
    register(page, site)
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile("#main$"))
