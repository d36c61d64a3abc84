"""The admin console and the activity page in the browser: credits, disabling, the 403 page for
others, the ledger audit, and every state's accessibility.

The admin account is made in the site's database with accounts.users.create_admin, in a thread of
its own: Playwright's sync API keeps an event loop running in the main thread.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest
from playwright.sync_api import Page, expect

from aichat_gateway.accounts.users import create_admin
from tests.support.browser import PASSWORD, Site, assert_accessible, log_in, new_email, register
from tests.support.earnings import earn


@dataclass(frozen=True)
class Admin:
    email: str
    token: str  # a bearer session for setting things up through the API


@dataclass(frozen=True)
class ApiUser:
    id: str
    email: str
    auth: dict[str, str]


def on_the_database(site: Site, work: Callable[[asyncpg.Connection], Awaitable[object]]) -> None:
    """Run `work` on the site's database, on a thread with its own event loop."""

    async def run() -> None:
        conn = await asyncpg.connect(site.settings.database_url)
        try:
            await work(conn)
        finally:
            await conn.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=30)


def api_login(site: Site, email: str) -> str:
    answer = httpx.post(site.at("/api/auth/login"), json={"email": email, "password": PASSWORD}, timeout=10)
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


def api_user(site: Site, tag: str) -> ApiUser:
    email = new_email(tag)
    answer = httpx.post(site.at("/api/auth/register"), json={"email": email, "password": PASSWORD}, timeout=10)
    assert answer.status_code == 201, answer.text
    return ApiUser(answer.json()["id"], email, {"authorization": f"Bearer {api_login(site, email)}"})


@pytest.fixture(scope="module")
def admin(site: Site) -> Admin:
    email = new_email("admin")
    on_the_database(site, lambda conn: create_admin(conn, email, PASSWORD))
    return Admin(email, api_login(site, email))


def grant(site: Site, admin: Admin, email: str, amount_usd: str, reason: str = "e2e credit") -> None:
    answer = httpx.post(
        site.at("/api/admin/credits"),
        json={"email": email, "amount_usd": amount_usd, "reason": reason},
        headers={"authorization": f"Bearer {admin.token}"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text


def test_an_admin_credits_a_user_by_email_and_the_user_sees_it_on_the_overview(
    page: Page, site: Site, admin: Admin, browser_context_b: Page
) -> None:
    buyer = register(browser_context_b, site)
    log_in(page, site, admin.email)
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Admin").click()
    page.get_by_role("navigation", name="Admin sections").get_by_role("link", name="Credits").click()
    expect(page.get_by_role("heading", name="Admin: credits")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("textbox", name="Buyer's e-mail").fill(buyer)
    page.get_by_role("textbox", name="Amount (USD)").fill("12.50")
    page.get_by_role("textbox", name="Reason").fill("launch promo")
    page.get_by_role("button", name="Grant credit").click()
    expect(page.get_by_role("status")).to_contain_text(f"Credited $12.50 to {buyer}")
    assert_accessible(page)
    browser_context_b.goto(site.at("/app"))
    expect(browser_context_b.get_by_text("$12.50").first).to_be_visible()


def test_a_credit_with_bad_fields_is_refused_next_to_them_and_what_was_typed_is_kept(
    page: Page, site: Site, admin: Admin
) -> None:
    log_in(page, site, admin.email)
    page.goto(site.at("/app/admin/credits"))
    page.get_by_role("textbox", name="Buyer's e-mail").fill(new_email("nobody"))
    page.get_by_role("textbox", name="Amount (USD)").fill("0")
    page.get_by_role("textbox", name="Reason").fill("a typo")
    page.get_by_role("button", name="Grant credit").click()
    amount = page.get_by_role("textbox", name="Amount (USD)")
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(amount).to_have_value("0")
    expect(page.get_by_text("amount_usd must be more than zero")).to_be_visible()
    expect(page.get_by_role("textbox", name="Buyer's e-mail")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_text("no account has this e-mail address")).to_be_visible()
    expect(page.get_by_role("textbox", name="Reason")).to_have_value("a typo")
    assert_accessible(page)


def test_a_buyer_gets_the_403_page_on_the_admin_console(page: Page, site: Site) -> None:
    register(page, site)
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    answer = page.goto(site.at("/app/admin"))
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("heading", name="Forbidden")).to_be_visible()
    assert_accessible(page)


def test_a_disabled_user_is_signed_out_and_cannot_log_in(
    page: Page, site: Site, admin: Admin, browser_context_b: Page
) -> None:
    user = register(browser_context_b, site)
    log_in(page, site, admin.email)
    page.goto(site.at("/app/admin"))
    page.get_by_role("searchbox", name="Search by e-mail").fill(user)
    page.get_by_role("button", name="Search").click()
    assert_accessible(page)
    page.get_by_role("link", name=user).click()
    expect(page.get_by_role("heading", name=user)).to_be_visible()
    assert_accessible(page)
    page.get_by_role("button", name="Disable account").click()
    expect(page.get_by_role("status")).to_contain_text("Account disabled")
    assert_accessible(page)
    browser_context_b.goto(site.at("/app"))
    expect(browser_context_b).to_have_url(re.compile(r"/login\?next="))
    browser_context_b.get_by_role("textbox", name="Email").fill(user)
    browser_context_b.get_by_label("Password").fill(PASSWORD)
    browser_context_b.get_by_role("button", name="Log in").click()
    expect(browser_context_b.get_by_role("alert")).to_contain_text("disabled by an administrator")
    assert_accessible(browser_context_b)


def test_the_activity_page_shows_a_login_and_an_admins_credit(
    page: Page, site: Site, admin: Admin, browser_context_b: Page
) -> None:
    buyer = new_email("activity")
    register(page, site, buyer)
    grant(site, admin, buyer, "3.00", "thanks for the report")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Activity").click()
    events = page.get_by_role("table", name="Recent events")
    expect(events.get_by_role("row").filter(has_text="Logged in").first).to_be_visible()
    credit = events.get_by_role("row").filter(has_text="Credit granted by an admin")
    expect(credit).to_contain_text(admin.email)
    expect(credit).to_contain_text("thanks for the report")
    expect(page.get_by_role("combobox", name="Kind")).to_have_count(0)  # filters are for admins
    assert_accessible(page)


def test_an_admin_sees_everyones_admin_actions_on_the_activity_page(page: Page, site: Site, admin: Admin) -> None:
    buyer = new_email("seen")
    register(page, site, buyer)
    grant(site, admin, buyer, "1.00")
    page.context.clear_cookies()
    log_in(page, site, admin.email)
    page.goto(site.at("/app/activity"))
    page.get_by_role("combobox", name="Kind").select_option(label="Admin actions")
    page.get_by_role("checkbox", name="Every account").check()
    page.get_by_role("button", name="Show").click()
    rows = page.get_by_role("table", name="Recent events").get_by_role("row")
    expect(rows.filter(has_text="Credit granted by an admin").filter(has_text=buyer)).to_have_count(1)
    expect(rows.filter(has_text="Logged in")).to_have_count(0)
    assert_accessible(page)


def test_an_admin_runs_the_ledger_audit_and_sees_its_result(page: Page, site: Site, admin: Admin) -> None:
    log_in(page, site, admin.email)
    page.goto(site.at("/app/admin/audit"))
    assert_accessible(page)
    page.get_by_role("button", name="Run audit").click()
    expect(page.get_by_role("status")).to_contain_text("Audit finished")
    expect(page.get_by_text("Every money invariant holds.")).to_be_visible()
    expect(page.get_by_text(admin.email, exact=True).last).to_be_visible()
    assert_accessible(page)


def test_the_listings_and_payouts_tabs_say_what_to_do_when_empty_or_list_what_there_is(
    page: Page, site: Site, admin: Admin
) -> None:
    log_in(page, site, admin.email)
    page.goto(site.at("/app/admin/listings"))
    expect(page.get_by_role("heading", name="Every listing")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("navigation", name="Admin sections").get_by_role("link", name="Payouts").click()
    expect(page.get_by_role("heading", name="Pending payouts")).to_be_visible()
    assert_accessible(page)


def test_an_admin_disables_a_listing_with_a_reason_the_seller_sees_and_enables_it_again(
    page: Page, site: Site, admin: Admin
) -> None:
    seller = api_user(site, "seller")
    name = f"listing {secrets.token_hex(3)}"
    body = {
        "name": name,
        "provider": "openai",
        "base_url": site.fake_upstream_url,
        "api_key": "sk-e2e-" + secrets.token_hex(12),
        "models": [{"model": "gpt-4o-mini"}],
        "pricing": {"multiplier": "1"},
        "attest_resale": True,
    }
    created = httpx.post(site.at("/api/marketplace/listings"), json=body, headers=seller.auth, timeout=10)
    assert created.status_code == 201, created.text
    log_in(page, site, admin.email)
    page.goto(site.at("/app/admin/listings"))
    page.get_by_role("link", name=name).click()
    page.get_by_role("button", name="Disable listing").click()
    reason = page.get_by_role("textbox", name="Reason (the seller sees it)")
    expect(reason).to_have_attribute("aria-invalid", "true")
    assert_accessible(page)
    reason.fill("Resold keys are not allowed")
    page.get_by_role("button", name="Disable listing").click()
    expect(page.get_by_role("status")).to_contain_text("Listing disabled")
    assert_accessible(page)
    seen = httpx.get(site.at(f"/api/marketplace/listings/{created.json()['id']}"), headers=seller.auth, timeout=10)
    assert (seen.json()["status"], seen.json()["status_reason"]) == ("disabled", "Resold keys are not allowed")
    page.get_by_role("button", name="Enable listing").click()
    expect(page.get_by_role("status")).to_contain_text("Listing enabled")


def test_an_admin_marks_a_pending_payout_paid_with_its_reference(page: Page, site: Site, admin: Admin) -> None:
    seller = api_user(site, "payee")
    on_the_database(site, lambda conn: earn(conn, seller.id, 60_000_000, at=datetime.now(UTC) - timedelta(days=30)))
    requested = httpx.post(site.at("/api/seller/payouts"), json={}, headers=seller.auth, timeout=10)
    assert requested.status_code == 201, requested.text
    log_in(page, site, admin.email)
    page.goto(site.at("/app/admin/payouts"))
    row = page.get_by_role("table", name="Pending payouts").get_by_role("row").filter(has_text=seller.email)
    assert_accessible(page)
    row.get_by_role("link").click()
    page.get_by_role("button", name="Mark paid").click()
    expect(page.get_by_role("textbox", name="Payment reference")).to_have_attribute("aria-invalid", "true")
    assert_accessible(page)
    page.get_by_role("textbox", name="Payment reference").fill("BANK-2026-0042")
    page.get_by_role("button", name="Mark paid").click()
    expect(page.get_by_role("status")).to_contain_text("Payout marked paid")
    expect(page.get_by_text("BANK-2026-0042")).to_be_visible()
    assert_accessible(page)
    paid = httpx.get(site.at(f"/api/seller/payouts/{requested.json()['id']}"), headers=seller.auth, timeout=10)
    assert (paid.json()["status"], paid.json()["reference"]) == ("paid", "BANK-2026-0042")
