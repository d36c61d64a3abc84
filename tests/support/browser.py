"""The dashboard in a real browser: a running site, and what a user does on it.

Elements are found by role and accessible name, as a user and a screen reader find them, never by
CSS paths. `assert_accessible` runs axe-core (axe-playwright-python) for WCAG 2.1 A and AA and fails
with each violation's rule, impact and first element.
"""

from __future__ import annotations

import itertools
import re
import secrets
from dataclasses import dataclass

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from aichat_gateway.config.settings import Settings

PASSWORD = "correct horse battery staple"
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_axe = Axe()
_emails = itertools.count()


@dataclass(frozen=True)
class Site:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    settings: Settings  # the gateway's database and Redis prefix (for seeding and checks)
    fake_upstream_url: str  # a well-behaved fake provider, http://127.0.0.1:P/v1

    def at(self, path: str) -> str:
        return self.url + path


def new_email(tag: str = "user") -> str:
    return f"{tag}-{next(_emails)}-{secrets.token_hex(4)}@e2e.example.com"


def register(page: Page, site: Site, email: str | None = None, password: str = PASSWORD) -> str:
    """Create an account through the page; the browser ends up signed in on /app."""
    email = email or new_email()
    page.goto(site.at("/register"))
    page.get_by_role("textbox", name="Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(site.at("/app"))
    return email


def log_in(page: Page, site: Site, email: str, password: str = PASSWORD, *, here: bool = False) -> None:
    """Log in on /login (`here`: on the login page the browser is already on, keeping its `next`)."""
    if not here:
        page.goto(site.at("/login"))
    page.get_by_role("textbox", name="Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).not_to_have_url(re.compile(r"/login(\?|$)"))


def assert_accessible(page: Page) -> None:
    """No WCAG 2.1 A/AA violation on the page as it is now."""
    results = _axe.run(page, options={"runOnly": {"type": "tag", "values": WCAG_AA}})
    violations = results.response.get("violations", [])
    found = [
        f"{v['id']} ({v['impact']}, {len(v['nodes'])} nodes, first: {v['nodes'][0]['target']}): {v['help']}"
        for v in violations
    ]
    assert not found, f"axe-core on {page.url}:\n" + "\n".join(found)
