"""The dashboard mounted in the app: pages, headers, forms' CSRF and the switch for API-only nodes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from aichat_gateway.config.settings import Settings
from aichat_gateway.server.app import create_app
from tests.support.app import replace_services
from tests.support.emails import unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
PASSWORD = "correct horse battery staple"


async def _register(client: httpx.AsyncClient) -> str:
    email = unique_email()
    response = await client.post("/register", data={"email": email, "password": PASSWORD})
    assert response.status_code == 303, response.text
    return email


async def test_the_root_sends_a_visitor_to_the_login_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert (response.status_code, response.headers["location"]) == (303, "/login")


async def test_pages_carry_a_strict_content_security_policy(client: httpx.AsyncClient) -> None:
    response = await client.get("/login")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert response.headers["x-frame-options"] == "DENY"
    assert "<script>" not in response.text  # no inline script: every script has a src


async def test_static_files_with_their_hash_are_cached_for_a_year(client: httpx.AsyncClient) -> None:
    page = await client.get("/login")
    css = re.search(r'href="(/static/css/matrix\.css\?v=[0-9a-f]+)"', page.text)
    assert css is not None
    response = await client.get(css.group(1))
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_registering_through_the_form_sets_the_session_cookies(client: httpx.AsyncClient) -> None:
    await _register(client)
    assert client.cookies.get("aichat_session") and client.cookies.get("aichat_csrf")
    overview = await client.get("/app")
    assert overview.status_code == 200 and "Overview" in overview.text


async def test_a_logout_post_without_the_csrf_field_ends_no_session(client: httpx.AsyncClient) -> None:
    await _register(client)
    session = client.cookies["aichat_session"]
    response = await client.post("/logout", data={})
    assert response.status_code == 303
    still = await client.get("/api/auth/me", headers={"authorization": f"Bearer {session}"})
    assert still.status_code == 200


async def test_logout_with_the_csrf_field_ends_the_session_everywhere(client: httpx.AsyncClient) -> None:
    await _register(client)
    session = client.cookies["aichat_session"]
    csrf = client.cookies["aichat_csrf"]
    response = await client.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    ended = await client.get("/api/auth/me", headers={"authorization": f"Bearer {session}"})
    assert ended.status_code == 401


async def test_a_cross_site_form_post_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/login", data={"email": unique_email(), "password": PASSWORD}, headers={"origin": "https://evil.example"}
    )
    assert response.status_code == 403


async def test_an_unknown_path_is_an_html_404_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")


async def test_unknown_api_paths_stay_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")


@pytest.fixture
async def api_only(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"dashboard": False}))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
            yield c


async def test_with_the_dashboard_off_the_root_is_a_json_404(api_only: httpx.AsyncClient) -> None:
    response = await api_only.get("/")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert (await api_only.get("/login")).status_code == 404


class _BrokenBalances:
    async def view(self, user_id: str) -> None:
        raise RuntimeError("balances unavailable")


async def test_a_fault_in_a_page_is_a_themed_500_page_without_details(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    await _register(client)
    previous = replace_services(app, hot=_BrokenBalances())
    # As a browser sees it: the response, not the exception Starlette re-raises for the logs.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=client.base_url, cookies=client.cookies) as browser:
        try:
            response = await browser.get("/app")
        finally:
            app.state.services = previous
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "balances unavailable" not in response.text and "Traceback" not in response.text


async def test_an_unknown_v1_path_stays_an_openai_shaped_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/completions-of-the-future", json={})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
