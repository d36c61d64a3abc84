"""Broken object-level authorisation: user B aims at user A's objects by their ids.

Every owned object answers 404 to anyone else, with the very error a made-up id gets, so B can
neither act on A's objects nor learn that they exist. Lists and filters only ever show the caller's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from aichat_gateway.billing.credits import grant_credit
from aichat_gateway.queryparams import encode_cursor
from tests.support.attack import Account, Gateway, assert_error
from tests.support.earnings import earn

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

USD = 1_000_000


@dataclass(frozen=True)
class Victim:
    """User A and what A owns."""

    account: Account
    key: dict[str, Any]
    listing: dict[str, Any]
    topup_id: str
    payout_id: str
    usage_request_id: str


async def victim(gateway: Gateway) -> Victim:
    a = await gateway.user("victim")
    key = await gateway.create_key(a, "a's key")
    listing = await gateway.create_listing(a, name="a's listing")
    db = gateway.app.state.services.db

    async def no_hot_view(user_id: str, amount_micro: int) -> None:
        return None

    await grant_credit(
        db,
        user_id=a.id,
        amount_micro=7 * USD,
        reason="bola",
        granted_by=None,
        idempotency_key=None,
        on_balance_change=no_hot_view,
    )
    topup_id = str(uuid.uuid4())
    await db.execute(
        "INSERT INTO topups (id, user_id, amount_micro, status) VALUES ($1, $2, $3, 'creating')",
        uuid.UUID(topup_id),
        uuid.UUID(a.id),
        20 * USD,
    )
    request_id = "req_bola_" + uuid.uuid4().hex
    await db.execute(
        """INSERT INTO usage_records (request_id, buyer_id, key_id, model, outcome, status, created_at)
           VALUES ($1, $2, $3, 'gpt-4o-mini', 'ok', 200, $4)""",
        request_id,
        uuid.UUID(a.id),
        uuid.UUID(key["id"]),
        datetime.now(UTC),
    )
    async with db.acquire() as conn:
        # Earned past the holding period, so the payout below can be requested.
        await earn(conn, a.id, 20 * USD, listing_id=listing["id"], at=datetime.now(UTC) - timedelta(days=10))
    payout = await gateway.client.post("/api/seller/payouts", json={}, headers=a.auth)
    assert payout.status_code == 201, payout.text
    account = await gateway.client.put(
        "/api/seller/payout-account", json={"stripe_account_id": "acct_1VictimOnly0000"}, headers=a.auth
    )
    assert account.status_code == 200, account.text
    return Victim(a, key, listing, topup_id, payout.json()["id"], request_id)


async def assert_looks_absent(client: httpx.AsyncClient, method: str, path: str, made_up: str, **kw: Any) -> None:
    """404 for the victim's object, with the same error as for an id nobody has."""
    answer = await client.request(method, path, **kw)
    error = assert_error(answer, 404)
    absent = await client.request(method, path.rsplit("/", 1)[0] + "/" + made_up, **kw)
    assert error == assert_error(absent, 404)


async def test_another_users_key_cannot_be_changed_or_revoked_and_looks_absent(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    path, made_up = f"/api/keys/{a.key['id']}", str(uuid.uuid4())
    await assert_looks_absent(gateway.client, "PATCH", path, made_up, json={"name": "mine now"}, headers=b.auth)
    await assert_looks_absent(gateway.client, "DELETE", path, made_up, headers=b.auth)
    [key] = (await gateway.client.get("/api/keys", headers=a.account.auth)).json()["data"]
    assert (key["name"], key["revoked_at"]) == ("a's key", None)
    assert (await gateway.app.state.services.keys.lookup(a.key["key"])).user_id == a.account.id


async def test_another_users_session_cannot_be_ended_and_looks_absent(gateway: Gateway) -> None:
    a, b = await gateway.user("victim"), await gateway.user("intruder")
    [session] = (await gateway.client.get("/api/auth/sessions", headers=a.auth)).json()["data"]
    path, made_up = f"/api/auth/sessions/{session['id']}", str(uuid.uuid4())
    await assert_looks_absent(gateway.client, "DELETE", path, made_up, headers=b.auth)
    assert (await gateway.client.get("/api/auth/me", headers=a.auth)).status_code == 200
    listed = (await gateway.client.get("/api/auth/sessions", headers=b.auth)).json()["data"]
    assert session["id"] not in {s["id"] for s in listed} and len(listed) == 1


async def test_a_user_cannot_end_another_users_sessions_through_the_admin_call(gateway: Gateway) -> None:
    a, b = await gateway.user("victim"), await gateway.user("intruder")
    assert_error(await gateway.client.post(f"/api/admin/users/{a.id}/sessions/revoke", headers=b.auth), 403)
    assert (await gateway.client.get("/api/auth/me", headers=a.auth)).status_code == 200


async def test_another_users_keys_never_appear_in_a_list(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    listed = await gateway.client.get("/api/keys", headers=b.auth)
    assert listed.status_code == 200 and listed.json()["data"] == []
    assert a.key["prefix"] not in listed.text


async def test_another_sellers_listing_cannot_be_read_changed_or_deleted(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    path, made_up = f"/api/marketplace/listings/{a.listing['id']}", str(uuid.uuid4())
    await assert_looks_absent(gateway.client, "GET", path, made_up, headers=b.auth)
    patch = {"base_url": "http://127.0.0.1:9/stolen", "status": "paused"}
    await assert_looks_absent(gateway.client, "PATCH", path, made_up, json=patch, headers=b.auth)
    await assert_looks_absent(gateway.client, "DELETE", path, made_up, headers=b.auth)
    listed = await gateway.client.get("/api/marketplace/listings", headers=b.auth)
    assert listed.json()["data"] == []
    mine = (await gateway.client.get(path, headers=a.account.auth)).json()
    assert (mine["status"], mine["base_url"]) == ("active", "http://127.0.0.1:9/v1")


async def test_another_users_transactions_never_show_even_past_their_cursor(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    own = (await gateway.client.get("/api/billing/transactions", headers=a.account.auth)).json()["data"]
    assert [entry["type"] for entry in own] == ["credit"]
    assert (await gateway.client.get("/api/billing/transactions", headers=b.auth)).json()["data"] == []
    # A cursor is only an entry id; one just past A's entry still lists B's own entries only.
    cursor = encode_cursor(str(int(own[0]["id"]) + 1))
    answer = await gateway.client.get("/api/billing/transactions", params={"cursor": cursor}, headers=b.auth)
    assert answer.status_code == 200 and answer.json()["data"] == []


async def test_another_users_usage_never_shows_even_filtered_by_their_key(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    own = await gateway.client.get("/api/billing/usage", params={"key_id": a.key["id"]}, headers=a.account.auth)
    assert [row["request_id"] for row in own.json()["data"]] == [a.usage_request_id]
    for params in ({}, {"key_id": a.key["id"]}, {"model": "gpt-4o-mini"}):
        answer = await gateway.client.get("/api/billing/usage", params=params, headers=b.auth)
        assert answer.status_code == 200 and answer.json()["data"] == [], params


async def test_another_users_top_up_looks_absent(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    path = f"/api/billing/topups/{a.topup_id}"
    assert (await gateway.client.get(path, headers=a.account.auth)).status_code == 200
    await assert_looks_absent(gateway.client, "GET", path, str(uuid.uuid4()), headers=b.auth)


async def test_another_sellers_payout_looks_absent_and_never_lists(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    path = f"/api/seller/payouts/{a.payout_id}"
    assert (await gateway.client.get(path, headers=a.account.auth)).status_code == 200
    await assert_looks_absent(gateway.client, "GET", path, str(uuid.uuid4()), headers=b.auth)
    listed = await gateway.client.get("/api/seller/payouts", headers=b.auth)
    assert listed.status_code == 200 and listed.json()["data"] == []


async def test_a_non_admin_gets_one_and_the_same_403_for_any_payout_decision(gateway: Gateway) -> None:
    """Admin-only calls refuse by role before any look-up: no existence oracle in the status."""
    a, b = await victim(gateway), await gateway.user("intruder")
    for action, body in (("mark-paid", {"reference": "stolen"}), ("cancel", None), ("approve", None)):
        real = await gateway.client.post(f"/api/admin/payouts/{a.payout_id}/{action}", json=body, headers=b.auth)
        fake = await gateway.client.post(f"/api/admin/payouts/{uuid.uuid4()}/{action}", json=body, headers=b.auth)
        assert assert_error(real, 403) == assert_error(fake, 403)
    payout = (await gateway.client.get(f"/api/seller/payouts/{a.payout_id}", headers=a.account.auth)).json()
    assert payout["status"] == "pending"


async def test_another_sellers_payout_account_is_neither_shown_nor_changed(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    shown = await gateway.client.get("/api/seller/payout-account", headers=b.auth)
    assert shown.json()["stripe_account_id"] is None
    changed = await gateway.client.put(
        "/api/seller/payout-account", json={"stripe_account_id": "acct_1Intruder000000"}, headers=b.auth
    )
    assert changed.status_code == 200
    mine = (await gateway.client.get("/api/seller/payout-account", headers=a.account.auth)).json()
    assert mine["stripe_account_id"] == "acct_1VictimOnly0000"


async def test_another_sellers_earnings_never_show(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    own = (await gateway.client.get("/api/seller/earnings", headers=a.account.auth)).json()
    assert own["earned_usd"] == "18.000000" and [x["listing_id"] for x in own["by_listing"]] == [a.listing["id"]]
    theirs = (await gateway.client.get("/api/seller/earnings", headers=b.auth)).json()
    assert (theirs["earned_usd"], theirs["by_listing"], theirs["by_day"]) == ("0.000000", [], [])


async def test_the_balance_is_always_the_callers_own(gateway: Gateway) -> None:
    a, b = await victim(gateway), await gateway.user("intruder")
    assert (await gateway.client.get("/api/billing/balance", headers=a.account.auth)).json()[
        "balance_usd"
    ] == "7.000000"
    assert (await gateway.client.get("/api/billing/balance", headers=b.auth)).json()["balance_usd"] == "0.000000"
