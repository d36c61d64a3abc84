"""API keys in the browser (`/app/keys`): create one, see the secret once, copy it, call /v1 with it,
edit its settings, revoke it after a confirmation; every state passes axe-core."""

from __future__ import annotations

import re

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.support.browser import Site, assert_accessible, register
from tests.support.market_seed import Offer, fund_account, list_fake_upstream, wait_until_served
from tests.support.waiting import wait_until

SECRET = re.compile(r"^agw-[A-Za-z0-9_-]{43}$")
PROPAGATION_LIMIT = 1.0  # seconds for the gateway to refuse the key of an ended session


@pytest.fixture(scope="module")
def offer(site: Site) -> Offer:
    return list_fake_upstream(site)


def create_key(page: Page, site: Site, name: str) -> str:
    """Create a key on /app/keys; its secret, read from the one-time display."""
    page.goto(site.at("/app/keys"))
    page.get_by_role("textbox", name="Name").fill(name)
    page.get_by_role("button", name="Create key").click()
    created = page.get_by_role("region", name=f"Key “{name}” created")
    expect(created).to_be_visible()
    secret = created.get_by_text(SECRET).inner_text()
    assert SECRET.match(secret)
    return secret


def chat(site: Site, key: str, model: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hello!"}]}
    return httpx.post(
        site.at("/v1/chat/completions"), json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def clipboard(page: Page) -> str:
    text: str = page.evaluate("navigator.clipboard.readText()")
    return text


def test_a_new_key_is_shown_once_copied_and_answers_a_chat(page: Page, site: Site, offer: Offer) -> None:
    email = register(page, site)
    fund_account(site, email, "5")
    page.goto(site.at("/app/keys"))
    expect(page.get_by_role("heading", name="API keys")).to_be_visible()
    expect(page.get_by_text("No active key yet")).to_be_visible()
    assert_accessible(page)

    secret = create_key(page, site, "laptop")
    expect(page.get_by_text("you will not see it again")).to_be_visible()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    page.get_by_role("button", name="Copy key").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert clipboard(page) == secret
    assert_accessible(page)

    wait_until_served(site, secret, offer.model)
    answer = chat(site, secret, offer.model)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]

    page.goto(site.at("/app/keys"))
    row = page.get_by_role("row", name=re.compile("laptop"))
    expect(row).to_contain_text(secret[:12])
    assert secret not in page.content()


def test_the_quickstart_after_creation_copies_a_python_snippet_with_the_key(page: Page, site: Site) -> None:
    register(page, site)
    secret = create_key(page, site, "sdk")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.url)
    expected = {"curl": "curl ", "Python (openai)": "from openai import OpenAI", "JavaScript (openai)": "new OpenAI("}
    for snippet, marker in expected.items():
        page.get_by_role("button", name=f"Copy {snippet}").click()
        copied = clipboard(page)
        assert secret in copied and site.at("/v1") in copied and marker in copied


def field(page: Page, label: str) -> Locator:
    return page.get_by_role("textbox", name=label)


def test_a_bad_cap_is_refused_next_to_its_field_keeping_what_was_typed(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/keys"))
    field(page, "Name").fill("ci runner")
    page.get_by_text("Routing defaults and spend caps (optional)").click()
    field(page, "Daily spend cap (USD)").fill("-3")
    page.get_by_role("button", name="Create key").click()
    cap = field(page, "Daily spend cap (USD)")
    expect(cap).to_have_attribute("aria-invalid", "true")
    expect(cap).to_have_value("-3")
    expect(field(page, "Name")).to_have_value("ci runner")
    expect(page.get_by_text(re.compile("daily_spend_cap_usd must be more than 0"))).to_be_visible()
    expect(page.get_by_role("region", name=re.compile("created"))).to_have_count(0)
    assert_accessible(page)


def test_a_key_is_edited_then_revoked_after_a_confirmation(page: Page, site: Site) -> None:
    register(page, site)
    secret = create_key(page, site, "build box")
    page.goto(site.at("/app/keys"))
    page.get_by_role("link", name="build box", exact=True).click()
    expect(page.get_by_role("heading", name="Key “build box”")).to_be_visible()
    expect(page.get_by_role("region", name="Quickstart")).to_contain_text("AICHAT_API_KEY")
    assert_accessible(page)

    field(page, "Monthly spend cap (USD)").fill("20")
    page.get_by_label("Order offers by").select_option("price")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_contain_text("Changes saved")
    expect(page.get_by_role("region", name="Details")).to_contain_text("$20.00")
    expect(page.get_by_label("Order offers by")).to_have_value("price")
    assert_accessible(page)

    page.get_by_role("link", name="Revoke key").click()
    expect(page.get_by_role("heading", name="Revoke key “build box”?")).to_be_visible()
    assert_accessible(page)
    page.get_by_role("button", name="Revoke key").click()
    expect(page.get_by_role("status")).to_contain_text("Key “build box” revoked")
    expect(page.get_by_role("region", name="Revoked keys")).to_contain_text("build box")
    assert_accessible(page)
    assert httpx.get(site.at("/v1/models"), headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_cancelling_a_revocation_keeps_the_key(page: Page, site: Site) -> None:
    register(page, site)
    create_key(page, site, "keep me")
    page.goto(site.at("/app/keys"))
    page.get_by_role("link", name="Revoke keep me").click()
    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_role("heading", name="Key “keep me”")).to_be_visible()
    page.goto(site.at("/app/keys"))
    expect(page.get_by_role("region", name="Active keys")).to_contain_text("keep me")


def test_the_browser_calls_v1_with_its_session_key_until_it_logs_out(page: Page, site: Site) -> None:
    register(page, site)
    page.goto(site.at("/app/keys"))
    found = page.evaluate(
        """async () => {
            const { sessionKey, v1Headers } = await import("/static/js/sessionkey.js");
            const first = await sessionKey();
            const answer = await fetch("/v1/models", { headers: await v1Headers() });
            return { key: first.key, status: answer.status };
        }"""
    )
    assert SECRET.match(found["key"]) and found["status"] == 200
    expect(page.get_by_role("region", name="Active keys")).not_to_contain_text(found["key"][:12])
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(site.at("/login"))
    wait_until(
        lambda: v1_status(site, found["key"]) == 401, PROPAGATION_LIMIT * 2, "the session key refused after logout"
    )


def v1_status(site: Site, key: str) -> int:
    return httpx.get(site.at("/v1/models"), headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code
