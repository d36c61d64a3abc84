"""The admin console's and the activity page's handlers on the real app: who may see and do what.

Every admin page and form answers 403 to a signed-in user who is not an admin, and such a POST
changes nothing; a form without its CSRF field changes nothing either; a credit form sent twice
grants once; a user's activity page never shows another account's events.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from aichat_gateway.accounts.users import create_admin
from aichat_gateway.billing import ledger
from tests.support.emails import unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
PASSWORD = "correct horse battery staple"


async def signed_in(app: Starlette, email: str) -> httpx.AsyncClient:
    browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test")
    answer = await browser.post("/login", data={"email": email, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    return browser


async def registered(app: Starlette) -> tuple[str, httpx.AsyncClient]:
    browser = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test")
    email = unique_email()
    answer = await browser.post("/register", data={"email": email, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    return email, browser


def csrf(browser: httpx.AsyncClient) -> dict[str, str]:
    return {"csrf_token": browser.cookies["aichat_csrf"]}


@pytest.fixture
async def admin_browser(app: Starlette, db: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    email = unique_email()
    await create_admin(db, email, PASSWORD)
    browser = await signed_in(app, email)
    try:
        yield browser
    finally:
        await browser.aclose()


@pytest.fixture
async def user(app: Starlette) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    email, browser = await registered(app)
    try:
        yield email, browser
    finally:
        await browser.aclose()


async def user_id(db: asyncpg.Connection, email: str) -> str:
    return str(await db.fetchval("SELECT id FROM users WHERE lower(email) = lower($1)", email))


async def disabled(db: asyncpg.Connection, email: str) -> bool:
    return bool(await db.fetchval("SELECT disabled_at IS NOT NULL FROM users WHERE lower(email) = lower($1)", email))


ADMIN_PAGES = ("/app/admin", "/app/admin/listings", "/app/admin/credits", "/app/admin/payouts", "/app/admin/audit")


async def test_a_visitor_is_sent_to_log_in_first(client: httpx.AsyncClient) -> None:
    answer = await client.get("/app/admin/credits")
    assert (answer.status_code, answer.headers["location"]) == (303, "/login?next=/app/admin/credits")


@pytest.mark.parametrize("path", ADMIN_PAGES)
async def test_every_admin_page_is_403_for_a_user(user: tuple[str, httpx.AsyncClient], path: str) -> None:
    _, browser = user
    answer = await browser.get(path)
    assert answer.status_code == 403
    assert "Forbidden" in answer.text


async def test_a_users_admin_forms_are_403_and_change_nothing(
    app: Starlette, db: asyncpg.Connection, user: tuple[str, httpx.AsyncClient]
) -> None:
    _, browser = user
    victim, other = await registered(app)
    await other.aclose()
    victim_id = await user_id(db, victim)
    answers = [
        await browser.post(f"/app/admin/users/{victim_id}/disable", data=csrf(browser)),
        await browser.post(f"/app/admin/users/{victim_id}/role", data={**csrf(browser), "role": "admin"}),
        await browser.post(
            "/app/admin/credits",
            data={**csrf(browser), "email": victim, "amount_usd": "5", "reason": "x", "idempotency_key": "k"},
        ),
        await browser.post("/app/admin/audit", data=csrf(browser)),
        await browser.post(f"/app/admin/payouts/{uuid.uuid4()}/cancel", data=csrf(browser)),
        await browser.post(f"/app/admin/listings/{uuid.uuid4()}", data={**csrf(browser), "status": "disabled"}),
    ]
    assert [a.status_code for a in answers] == [403] * len(answers)
    assert not await disabled(db, victim)
    assert await db.fetchval("SELECT role FROM users WHERE id = $1::uuid", victim_id) == "user"
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, victim_id) == 0
    assert await db.fetchval("SELECT count(*) FROM audit_runs WHERE ran_by = $1::uuid", victim_id) == 0


async def test_an_admin_form_without_its_csrf_field_changes_nothing(
    admin_browser: httpx.AsyncClient, db: asyncpg.Connection, user: tuple[str, httpx.AsyncClient]
) -> None:
    email, _ = user
    answer = await admin_browser.post(f"/app/admin/users/{await user_id(db, email)}/disable", data={})
    assert answer.status_code != 200
    assert not await disabled(db, email)


async def test_an_admin_disables_and_enables_an_account_through_the_forms(
    admin_browser: httpx.AsyncClient, db: asyncpg.Connection, user: tuple[str, httpx.AsyncClient]
) -> None:
    email, browser = user
    target = await user_id(db, email)
    answer = await admin_browser.post(f"/app/admin/users/{target}/disable", data=csrf(admin_browser))
    assert (answer.status_code, answer.headers["location"]) == (303, f"/app/admin/users/{target}?done=disabled")
    assert await disabled(db, email)
    assert (await browser.get("/app")).status_code == 303  # the user's session ended: to the login page
    await admin_browser.post(f"/app/admin/users/{target}/enable", data=csrf(admin_browser))
    assert not await disabled(db, email)


async def test_an_admin_disabling_their_own_account_is_told_no_on_the_page(
    admin_browser: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    me = (await admin_browser.get("/api/auth/me")).json()["id"]
    answer = await admin_browser.post(f"/app/admin/users/{me}/disable", data=csrf(admin_browser))
    assert answer.status_code == 400
    assert "you cannot disable your own account" in answer.text
    assert not await db.fetchval("SELECT disabled_at IS NOT NULL FROM users WHERE id = $1::uuid", me)


async def test_a_credit_form_sent_twice_grants_once(
    admin_browser: httpx.AsyncClient, db: asyncpg.Connection, user: tuple[str, httpx.AsyncClient]
) -> None:
    email, _ = user
    form = {**csrf(admin_browser), "email": email, "amount_usd": "7.25", "reason": "promo", "idempotency_key": "abc"}
    first = await admin_browser.post("/app/admin/credits", data=form)
    again = await admin_browser.post("/app/admin/credits", data=form)
    assert (first.status_code, again.status_code) == (200, 200)
    assert "Credited $7.25" in again.text
    assert await ledger.balance_micro(db, ledger.AccountKind.BUYER, await user_id(db, email)) == 7_250_000


async def test_an_unknown_account_page_is_404(admin_browser: httpx.AsyncClient) -> None:
    assert (await admin_browser.get(f"/app/admin/users/{uuid.uuid4()}")).status_code == 404
    assert (await admin_browser.get("/app/admin/users/not-a-uuid")).status_code == 404
    assert (await admin_browser.get(f"/app/admin/payouts/{uuid.uuid4()}")).status_code == 404
    assert (await admin_browser.get(f"/app/admin/listings/{uuid.uuid4()}")).status_code == 404


async def test_a_users_activity_page_shows_their_events_and_never_anothers(
    app: Starlette, user: tuple[str, httpx.AsyncClient]
) -> None:
    _, browser = user
    other, other_browser = await registered(app)
    await other_browser.aclose()
    mine = await browser.get("/app/activity")
    assert mine.status_code == 200 and "Logged in" in mine.text
    assert other not in mine.text
    everyone = await browser.get("/app/activity", params={"all": "1"})
    assert everyone.status_code == 400
    assert "only an admin may see everyone" in everyone.text
    assert other not in everyone.text
