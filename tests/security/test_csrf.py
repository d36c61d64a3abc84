"""Cross-site requests riding the browser's session cookie: unsafe methods need the signed CSRF token.

The browser session is the httpOnly `aichat_session` cookie; `aichat_csrf` holds the HMAC of that
session's id and must come back in `x-csrf-token` on POST/PUT/PATCH/DELETE. A hostile page can
make the browser send the cookies, but cannot read them to set the header.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.attack import PASSWORD, Account, Gateway, assert_error, listing_body

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]


@dataclass(frozen=True)
class Browser:
    account: Account
    csrf: str
    key_id: str
    listing_id: str
    session_id: str  # the cookie session's


async def browser_session(gateway: Gateway) -> Browser:
    """A user with a key and a listing (made with the bearer token), then logged in with cookies."""
    account = await gateway.user("browser")
    key = await gateway.create_key(account)
    listing = await gateway.create_listing(account)
    answer = await gateway.client.post("/api/auth/login", json={"email": account.email, "password": PASSWORD})
    assert answer.status_code == 200
    csrf = gateway.client.cookies.get("aichat_csrf")
    assert csrf and gateway.client.cookies.get("aichat_session")
    [session] = [s for s in (await gateway.client.get("/api/auth/sessions")).json()["data"] if s["current"]]
    return Browser(account, csrf, key["id"], listing["id"], session["id"])


def unsafe_requests(browser: Browser) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every state-changing /api call a signed-in browser can make."""
    key, listing = f"/api/keys/{browser.key_id}", f"/api/marketplace/listings/{browser.listing_id}"
    return [
        ("POST", "/api/keys", {"name": "planted"}),
        ("PATCH", key, {"name": "renamed by a stranger"}),
        ("DELETE", key, None),
        ("POST", "/api/marketplace/listings", listing_body(base_url="http://127.0.0.1:9/attacker")),
        ("PATCH", listing, {"base_url": "http://127.0.0.1:9/attacker"}),
        ("DELETE", listing, None),
        ("POST", "/api/billing/topups", {"amount_usd": "20.00"}),
        ("PUT", "/api/seller/payout-account", {"stripe_account_id": "acct_1Attacker000000"}),
        ("POST", "/api/seller/payouts", {}),
        ("POST", "/api/admin/credits", {"email": browser.account.email, "amount_usd": "5", "reason": "x"}),
        ("POST", "/api/auth/password", {"current_password": PASSWORD, "new_password": "chosen by a stranger"}),
        ("DELETE", f"/api/auth/sessions/{browser.session_id}", None),
        ("POST", f"/api/admin/users/{browser.account.id}/sessions/revoke", None),
        ("POST", "/api/auth/logout", None),
    ]


async def send(client: httpx.AsyncClient, method: str, path: str, body: Any, **headers: str) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


async def test_unsafe_requests_with_the_session_cookie_and_no_csrf_header_are_403(gateway: Gateway) -> None:
    browser = await browser_session(gateway)
    for method, path, body in unsafe_requests(browser):
        assert_error(await send(gateway.client, method, path, body), 403)
    await assert_nothing_changed(gateway, browser)


async def test_unsafe_requests_with_a_wrong_csrf_header_are_403(gateway: Gateway) -> None:
    browser = await browser_session(gateway)
    wrong = browser.csrf[:-1] + ("0" if browser.csrf[-1] != "0" else "1")
    for method, path, body in unsafe_requests(browser):
        assert_error(await send(gateway.client, method, path, body, **{"x-csrf-token": wrong}), 403)
    await assert_nothing_changed(gateway, browser)


async def test_a_planted_csrf_cookie_echoed_in_the_header_is_403(gateway: Gateway) -> None:
    """Plain double-submit falls to a cookie set by a sibling subdomain; the HMAC binding does not."""
    browser = await browser_session(gateway)
    planted = "a" * 64
    gateway.client.cookies.set("aichat_csrf", planted)
    answer = await send(gateway.client, "POST", "/api/keys", {"name": "planted"}, **{"x-csrf-token": planted})
    assert_error(answer, 403)
    await assert_nothing_changed(gateway, browser)


async def test_the_csrf_token_of_another_session_is_403(gateway: Gateway) -> None:
    other = await browser_session(gateway)
    gateway.client.cookies.clear()
    browser = await browser_session(gateway)
    gateway.client.cookies.set("aichat_csrf", other.csrf)
    answer = await send(gateway.client, "POST", "/api/keys", {"name": "planted"}, **{"x-csrf-token": other.csrf})
    assert_error(answer, 403)
    await assert_nothing_changed(gateway, browser)


async def test_unsafe_requests_with_the_right_csrf_header_work(gateway: Gateway) -> None:
    browser = await browser_session(gateway)
    token = {"x-csrf-token": browser.csrf}
    created = await send(gateway.client, "POST", "/api/keys", {"name": "from the dashboard"}, **token)
    assert created.status_code == 201, created.text
    renamed = await send(gateway.client, "PATCH", f"/api/keys/{browser.key_id}", {"name": "renamed"}, **token)
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"
    paused = await send(
        gateway.client, "PATCH", f"/api/marketplace/listings/{browser.listing_id}", {"status": "paused"}, **token
    )
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    payout_account = {"stripe_account_id": "acct_1OkBrowser0000"}
    account = await send(gateway.client, "PUT", "/api/seller/payout-account", payout_account, **token)
    assert account.status_code == 200, account.text
    revoked = await send(gateway.client, "DELETE", f"/api/keys/{browser.key_id}", None, **token)
    assert revoked.status_code == 204


async def test_reads_with_the_session_cookie_need_no_csrf_header(gateway: Gateway) -> None:
    await browser_session(gateway)
    reads = ("/api/keys", "/api/auth/me", "/api/marketplace/listings", "/api/billing/balance", "/api/seller/earnings")
    for path in reads:
        answer = await gateway.client.get(path)
        assert answer.status_code == 200, f"{path}: {answer.text}"


async def test_a_logout_with_the_right_csrf_header_ends_the_cookie_session(gateway: Gateway) -> None:
    browser = await browser_session(gateway)
    token = gateway.client.cookies["aichat_session"]
    answer = await send(gateway.client, "POST", "/api/auth/logout", None, **{"x-csrf-token": browser.csrf})
    assert answer.status_code == 204
    assert_error(await gateway.client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"}), 401)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data", "text/plain"])
async def test_a_cross_site_form_cannot_log_the_browser_in(gateway: Gateway, content_type: str) -> None:
    """Login CSRF: a hostile form posting the attacker's credentials, with a type that needs no preflight."""
    account = await gateway.user("login-csrf")
    body = f'{{"email": "{account.email}", "password": "{PASSWORD}"}}'
    answer = await gateway.client.post("/api/auth/login", content=body, headers={"content-type": content_type})
    assert_error(answer, 400)
    assert "aichat_session" not in answer.headers.get("set-cookie", "")


async def assert_nothing_changed(gateway: Gateway, browser: Browser) -> None:
    """The refused request left the user's keys, listing and payout account as they were."""
    auth = browser.account.auth
    cookies = httpx.Cookies(gateway.client.cookies)
    gateway.client.cookies.clear()
    try:
        keys = (await gateway.client.get("/api/keys", headers=auth)).json()["data"]
        assert [(k["id"], k["name"], k["revoked_at"]) for k in keys] == [(browser.key_id, "attack", None)]
        listings = (await gateway.client.get("/api/marketplace/listings", headers=auth)).json()["data"]
        assert [(item["id"], item["base_url"]) for item in listings] == [(browser.listing_id, "http://127.0.0.1:9/v1")]
        account = (await gateway.client.get("/api/seller/payout-account", headers=auth)).json()
        assert account["stripe_account_id"] is None
        payouts = (await gateway.client.get("/api/seller/payouts", headers=auth)).json()["data"]
        assert payouts == []
        # Both sessions live (the bearer one and the cookie one): none was ended, no password changed.
        listed = (await gateway.client.get("/api/auth/sessions", headers=auth)).json()["data"]
        assert browser.session_id in {s["id"] for s in listed} and len(listed) == 2
    finally:
        gateway.client.cookies = cookies
    assert (await gateway.client.get("/api/auth/me")).status_code == 200
