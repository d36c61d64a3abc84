"""The seller's pages and the API on one app and a real Postgres and Redis: both call the same
marketplace and billing functions (marketplace/manage.py, billing/earnings.py, Payouts.request), so
what a form creates the API lists, and every action lands in the audit trail once, whoever asked."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from aichat_gateway import audittrail
from tests.support.app import replace_services, services_of
from tests.support.earnings import earn
from tests.support.emails import unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
PASSWORD = "correct horse battery staple"
USD = 1_000_000


@pytest.fixture(autouse=True)
def accept_every_key(app: Any) -> None:
    """These tests are about the pages and the audit trail, not the provider: the key check (tested
    against the fake provider in test_proxy_keycheck.py and the e2e suite) accepts every key."""

    async def checker(provider: str, base_url: str, api_key: str) -> None:
        return None

    replace_services(app, key_checker=checker)


async def _sign_up(client: httpx.AsyncClient) -> tuple[str, dict[str, str]]:
    """A user signed in through the register page (cookies on `client`); (user id, bearer headers)."""
    email = unique_email("seller")
    assert (await client.post("/register", data={"email": email, "password": PASSWORD})).status_code == 303
    token = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()
    me = await client.get("/api/auth/me", headers={"authorization": f"Bearer {token['access_token']}"})
    return me.json()["id"], {"authorization": f"Bearer {token['access_token']}"}


def _form(client: httpx.AsyncClient, **fields: str) -> dict[str, str]:
    values = {
        "name": "page endpoint",
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "sk-page-" + secrets.token_hex(12),
        "models": "gpt-4o-mini\ngpt-4o=gpt-4o-2024-08-06",
        "pricing_mode": "multiplier",
        "multiplier": "0.9",
        "rpm": "60",
        "attest_resale": "yes",
        "csrf_token": client.cookies["aichat_csrf"],
    }
    values.update(fields)
    return values


async def test_a_listing_created_through_the_form_is_the_one_the_api_lists(client: httpx.AsyncClient) -> None:
    _, headers = await _sign_up(client)
    form = _form(client)
    created = await client.post("/app/seller/listings/new", data=form)
    assert (created.status_code, created.headers["location"]) == (303, "/app/seller?done=created")
    [listing] = (await client.get("/api/marketplace/listings", headers=headers)).json()["data"]
    assert listing["name"] == "page endpoint"
    assert listing["pricing"] == {"multiplier": "0.9"}
    assert listing["limits"] == {"rpm": 60}
    assert {(m["model"], m["upstream_model"]) for m in listing["models"]} == {
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o", "gpt-4o-2024-08-06"),
    }
    page = await client.get("/app/seller")
    assert "page endpoint" in page.text and form["api_key"] not in page.text


async def test_creating_through_the_form_is_in_the_audit_trail(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id, _ = await _sign_up(client)
    await client.post("/app/seller/listings/new", data=_form(client))
    [event] = await audittrail.events(db, subject_id=user_id, action_prefix="listing.")
    assert (event.action, event.actor_id, event.target_type) == (audittrail.LISTING_CREATED, user_id, "listing")
    assert event.detail["name"] == "page endpoint"


async def test_a_refused_form_creates_nothing_and_never_shows_the_key_again(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id, _ = await _sign_up(client)
    form = _form(client, attest_resale="", multiplier="lots", models="gpt-4o-mini\nnot a model")
    refused = await client.post("/app/seller/listings/new", data=form)
    assert refused.status_code == 400
    assert form["api_key"] not in refused.text
    assert 'id="f-attest_resale-error"' in refused.text
    assert 'id="f-multiplier-error"' in refused.text
    assert "line 2:" in refused.text
    assert await db.fetchval("SELECT count(*) FROM listings WHERE seller_id = $1", uuid.UUID(user_id)) == 0
    assert await audittrail.events(db, subject_id=user_id, action_prefix="listing.") == []


async def test_a_model_outside_the_catalog_without_explicit_prices_is_refused_at_the_pricing(
    client: httpx.AsyncClient,
) -> None:
    await _sign_up(client)
    refused = await client.post("/app/seller/listings/new", data=_form(client, models="house-model-1"))
    assert refused.status_code == 400
    assert 'id="f-pricing-error"' in refused.text
    assert "is not in the catalog" in refused.text


async def test_api_changes_and_deletes_are_audited_like_the_pages(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id, headers = await _sign_up(client)
    body = {
        "name": "api endpoint",
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "sk-api-" + secrets.token_hex(12),
        "models": [{"model": "gpt-4o-mini"}],
        "pricing": {"multiplier": "1"},
        "attest_resale": True,
    }
    listing = (await client.post("/api/marketplace/listings", json=body, headers=headers)).json()
    patched = await client.patch(
        f"/api/marketplace/listings/{listing['id']}", json={"status": "paused"}, headers=headers
    )
    assert patched.status_code == 200
    assert (await client.delete(f"/api/marketplace/listings/{listing['id']}", headers=headers)).status_code == 204
    events = await audittrail.events(db, subject_id=user_id, action_prefix="listing.")
    assert [e.action for e in events] == [
        audittrail.LISTING_DELETED,
        audittrail.LISTING_CHANGED,
        audittrail.LISTING_CREATED,
    ]
    assert events[1].detail == {"name": "api endpoint", "fields": ["status"], "status": "paused"}
    assert {e.target_id for e in events} == {listing["id"]}


async def test_pausing_through_the_page_stops_the_listing_as_the_api_shows(client: httpx.AsyncClient) -> None:
    _, headers = await _sign_up(client)
    await client.post("/app/seller/listings/new", data=_form(client))
    [listing] = (await client.get("/api/marketplace/listings", headers=headers)).json()["data"]
    paused = await client.post(
        f"/app/seller/listings/{listing['id']}/status",
        data={"status": "paused", "csrf_token": client.cookies["aichat_csrf"]},
    )
    assert paused.status_code == 303
    shown = (await client.get(f"/api/marketplace/listings/{listing['id']}", headers=headers)).json()
    assert shown["status"] == "paused"


async def test_another_sellers_listing_is_the_not_found_page(client: httpx.AsyncClient, app: Any) -> None:
    _, headers = await _sign_up(client)
    await client.post("/app/seller/listings/new", data=_form(client))
    [listing] = (await client.get("/api/marketplace/listings", headers=headers)).json()["data"]
    listing_path = listing["id"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as other:
        await _sign_up(other)
        assert (await other.get(f"/app/seller/listings/{listing_path}")).status_code == 404
        deleted = await other.post(
            f"/app/seller/listings/{listing_path}/delete", data={"csrf_token": other.cookies["aichat_csrf"]}
        )
        assert deleted.status_code == 404
    assert (await client.get(f"/app/seller/listings/{listing_path}")).status_code == 200


async def test_the_earnings_page_shows_what_the_api_answers(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    user_id, headers = await _sign_up(client)
    long_ago = datetime.now(UTC) - timedelta(days=10)
    await earn(db, user_id, 20 * USD, at=long_ago)
    await earn(db, user_id, 2 * USD, at=datetime.now(UTC) - timedelta(hours=1))
    figures = (await client.get("/api/seller/earnings", headers=headers)).json()
    assert (figures["earned_usd"], figures["available_usd"], figures["holding_usd"]) == (
        "19.800000",
        "18.000000",
        "1.800000",
    )
    page = await client.get("/app/seller/earnings")
    assert page.status_code == 200
    for shown in ("$19.80", "$18.00", "$1.80"):
        assert shown in page.text
    assert [d["earned_usd"] for d in figures["by_day"]] == ["18.000000", "1.800000"]
    assert page.text.count('data-usd="') == 2


async def test_a_payout_requested_on_the_page_is_in_the_history_and_the_audit_trail(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id, headers = await _sign_up(client)
    await earn(db, user_id, 20 * USD, at=datetime.now(UTC) - timedelta(days=10))
    requested = await client.post(
        "/app/seller/payouts", data={"amount_usd": "12.50", "csrf_token": client.cookies["aichat_csrf"]}
    )
    assert (requested.status_code, requested.headers["location"]) == (303, "/app/seller/payouts?done=requested")
    [payout] = (await client.get("/api/seller/payouts", headers=headers)).json()["data"]
    assert (payout["amount_usd"], payout["status"], payout["method"]) == ("12.500000", "pending", "manual")
    [event] = await audittrail.events(db, subject_id=user_id, action_prefix="payout.")
    assert (event.actor_id, event.target_id, event.detail["amount_usd"]) == (user_id, payout["id"], "12.500000")
    history = await client.get("/app/seller/payouts")
    assert "12.50" in history.text and "pending" in history.text


async def test_a_payout_above_what_is_available_changes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id, headers = await _sign_up(client)
    await earn(db, user_id, 20 * USD, at=datetime.now(UTC) - timedelta(days=10))
    refused = await client.post(
        "/app/seller/payouts", data={"amount_usd": "500", "csrf_token": client.cookies["aichat_csrf"]}
    )
    assert refused.status_code == 400
    assert "only 18.000000 USD is available for payout" in refused.text
    assert 'value="500"' in refused.text
    assert (await client.get("/api/seller/payouts", headers=headers)).json()["data"] == []
    assert await audittrail.events(db, subject_id=user_id, action_prefix="payout.") == []


async def test_a_payout_requested_through_the_api_is_audited_too(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id, headers = await _sign_up(client)
    await earn(db, user_id, 20 * USD, at=datetime.now(UTC) - timedelta(days=10))
    created = await client.post("/api/seller/payouts", json={}, headers=headers)
    assert created.status_code == 201
    [event] = await audittrail.events(db, subject_id=user_id, action_prefix="payout.")
    assert (event.action, event.target_id) == (audittrail.PAYOUT_REQUESTED, created.json()["id"])


async def test_a_listings_breaker_failures_and_last_errors_show_on_its_page(
    client: httpx.AsyncClient, db: asyncpg.Connection, app: Any
) -> None:
    user_id, headers = await _sign_up(client)
    await client.post("/app/seller/listings/new", data=_form(client))
    [listing] = (await client.get("/api/marketplace/listings", headers=headers)).json()["data"]
    svc = services_of(app)
    for _ in range(svc.breakers.config.fail_max):
        await svc.breakers.record(listing["id"], success=False)
    await db.execute(
        """INSERT INTO usage_records (request_id, buyer_id, listing_id, seller_id, model, outcome, status, created_at)
           VALUES ($1, $2, $3, $2, 'gpt-4o-mini', 'upstream_error', 502, now())""",
        "req_" + secrets.token_hex(8),
        uuid.UUID(user_id),
        uuid.UUID(listing["id"]),
    )
    page = await client.get(f"/app/seller/listings/{listing['id']}")
    assert page.status_code == 200
    assert f"{svc.breakers.config.fail_max} failures in a row" in page.text
    assert "upstream_error (HTTP 502)" in page.text
