"""One journey by keyboard alone: sign up, open the keys page from the navigation, create a key,
copy it, and log out — Tab, typing, Enter and Space only, as someone who cannot use a mouse."""

from __future__ import annotations

import re

from playwright.sync_api import Locator, Page, expect

from tests.support.browser import PASSWORD, Site, new_email

MAX_TABS = 60


def tab_to(page: Page, target: Locator) -> None:
    """Press Tab until `target` has the focus (it must be reachable in the tab order)."""
    for _ in range(MAX_TABS):
        if target.evaluate("element => element === document.activeElement"):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{target} is not reachable with Tab")


def test_a_person_signs_up_creates_and_copies_a_key_and_logs_out_by_keyboard(page: Page, site: Site) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    page.goto(site.at("/login"))
    tab_to(page, page.get_by_role("link", name="Create an account"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(site.at("/register"))

    email = new_email("keyboard")
    tab_to(page, page.get_by_role("textbox", name="Email"))
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    expect(page.get_by_label("Password")).to_be_focused()
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page).to_have_url(site.at("/app"))

    tab_to(page, page.get_by_role("navigation", name="Console").get_by_role("link", name="Keys"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(site.at("/app/keys"))

    tab_to(page, page.get_by_role("textbox", name="Name"))
    page.keyboard.type("keyboard key")
    tab_to(page, page.get_by_role("button", name="Create key"))
    page.keyboard.press("Enter")
    created = page.get_by_role("region", name="Key “keyboard key” created")
    expect(created).to_be_visible()
    secret = created.get_by_text(re.compile(r"^agw-")).inner_text()

    tab_to(page, page.get_by_role("button", name="Copy key"))
    page.keyboard.press("Space")
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret

    tab_to(page, page.get_by_role("button", name="Log out"))
    page.keyboard.press("Enter")
    expect(page).to_have_url(site.at("/login"))
