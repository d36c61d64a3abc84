"""The admin's account routes, the audit trail's route and the admin's money routes, on the real app.

Only admins reach /api/admin/*; disabling an account refuses its logins, ends its sessions and stops
its keys; every admin action lands in the affected account's audit trail; a user sees only their own
events.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette

from aichat_gateway import audittrail
from aichat_gateway.accounts.users import create_admin
from tests.support.earnings import earn
from tests.support.scratch import TEST_SECRET

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

PASSWORD = "admin-api-password"
USD = 1_000_000


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    auth: dict[str, str]


async def log_in(client: httpx.AsyncClient, email: str) -> httpx.Response:
    answer = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    client.cookies.clear()  # bearer only: a cookie would authenticate requests meant to be anonymous
    return answer


async def account(client: httpx.AsyncClient, tag: str = "user") -> Account:
    email = f"{tag}-{uuid.uuid4().hex[:10]}@example.com"
    registered = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    token = (await log_in(client, email)).json()["access_token"]
    return Account(registered.json()["id"], email, {"authorization": f"Bearer {token}"})


async def admin(client: httpx.AsyncClient, db: asyncpg.Connection) -> Account:
    email = f"admin-{uuid.uuid4().hex[:10]}@example.com"
    created = await create_admin(db, email, PASSWORD)
    token = (await log_in(client, email)).json()["access_token"]
    return Account(created.id, email, {"authorization": f"Bearer {token}"})


@pytest.fixture
async def boss(client: httpx.AsyncClient, db: asyncpg.Connection) -> Account:
    return await admin(client, db)


async def patch_user(client: httpx.AsyncClient, by: Account, user_id: str, body: dict[str, object]) -> httpx.Response:
    return await client.patch(f"/api/admin/users/{user_id}", json=body, headers=by.auth)


# ---- who may ------------------------------------------------------------------------------------


async def test_a_user_who_is_not_an_admin_gets_403_from_every_admin_route(client: httpx.AsyncClient) -> None:
    user = await account(client)
    other = await account(client)
    answers = [
        await client.get("/api/admin/users", headers=user.auth),
        await patch_user(client, user, other.id, {"disabled": True}),
        await client.get("/api/admin/payouts", headers=user.auth),
        await client.post("/api/admin/audit-runs", headers=user.auth),
        await client.get("/api/admin/audit-runs/last", headers=user.auth),
    ]
    assert [a.status_code for a in answers] == [403] * 5
    assert (await log_in(client, other.email)).status_code == 200  # nothing changed


async def test_without_a_session_the_admin_routes_answer_401(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/admin/users")).status_code == 401
    assert (await client.get("/api/audit/events")).status_code == 401


# ---- finding accounts ---------------------------------------------------------------------------


async def test_an_admin_finds_accounts_by_any_part_of_the_email(client: httpx.AsyncClient, boss: Account) -> None:
    user = await account(client, "findme")
    part = user.email.split("@")[0][-8:].upper()  # case does not matter
    answer = await client.get("/api/admin/users", params={"query": part}, headers=boss.auth)
    assert answer.status_code == 200, answer.text
    assert [(a["id"], a["role"], a["disabled"]) for a in answer.json()["data"]] == [(user.id, "user", False)]


async def test_like_wildcards_in_a_search_match_themselves_only(client: httpx.AsyncClient, boss: Account) -> None:
    await account(client)
    answer = await client.get("/api/admin/users", params={"query": "%"}, headers=boss.auth)
    assert answer.json()["data"] == []


# ---- disabling ----------------------------------------------------------------------------------


async def test_a_disabled_account_cannot_log_in_and_is_told_why(client: httpx.AsyncClient, boss: Account) -> None:
    user = await account(client)
    changed = await patch_user(client, boss, user.id, {"disabled": True})
    assert changed.status_code == 200, changed.text
    assert changed.json()["disabled"] is True
    refused = await log_in(client, user.email)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "account_disabled"
    assert "disabled" in refused.json()["error"]["message"]


async def test_a_wrong_password_for_a_disabled_account_says_only_wrong_password(
    client: httpx.AsyncClient, boss: Account
) -> None:
    user = await account(client)
    await patch_user(client, boss, user.id, {"disabled": True})
    refused = await client.post("/api/auth/login", json={"email": user.email, "password": "not the password"})
    assert refused.json()["error"]["code"] == "invalid_credentials"


async def test_disabling_ends_the_accounts_live_sessions(client: httpx.AsyncClient, boss: Account) -> None:
    user = await account(client)
    assert (await client.get("/api/auth/me", headers=user.auth)).status_code == 200
    await patch_user(client, boss, user.id, {"disabled": True})
    assert (await client.get("/api/auth/me", headers=user.auth)).status_code == 401


async def test_a_session_that_escaped_the_ending_is_still_refused_once_the_account_is_disabled(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user = await account(client)
    assert (await client.get("/api/auth/me", headers=user.auth)).status_code == 200
    # As if the login's session row was written just after disabling ended the sessions it saw.
    await db.execute("UPDATE users SET disabled_at = now() WHERE id = $1", uuid.UUID(user.id))
    assert (await client.get("/api/auth/me", headers=user.auth)).status_code == 401


async def test_a_disabled_accounts_keys_stop_working_and_come_back_when_enabled(
    client: httpx.AsyncClient, app: Starlette, boss: Account
) -> None:
    user = await account(client)
    created = await client.post("/api/keys", json={"name": "main"}, headers=user.auth)
    assert created.status_code == 201, created.text
    secret = created.json()["key"]
    keys = app.state.services.keys
    assert (await keys.lookup(secret)) is not None  # cached as live
    await patch_user(client, boss, user.id, {"disabled": True})
    assert (await keys.lookup(secret)) is None
    await patch_user(client, boss, user.id, {"disabled": False})
    assert (await keys.lookup(secret)) is not None
    assert (await log_in(client, user.email)).status_code == 200


async def test_an_admin_cannot_disable_themselves(client: httpx.AsyncClient, boss: Account) -> None:
    refused = await patch_user(client, boss, boss.id, {"disabled": True})
    assert refused.status_code == 400
    assert refused.json()["error"]["param"] == "disabled"
    assert (await client.get("/api/admin/users", headers=boss.auth)).status_code == 200


async def test_an_unknown_user_is_404(client: httpx.AsyncClient, boss: Account) -> None:
    assert (await patch_user(client, boss, str(uuid.uuid4()), {"disabled": True})).status_code == 404
    assert (await patch_user(client, boss, "not-a-uuid", {"disabled": True})).status_code == 404


@pytest.mark.parametrize("body", [{}, {"role": "owner"}, {"disabled": "yes"}, {"role": None}, {"email": "x@y.z"}])
async def test_a_malformed_change_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, boss: Account, body: dict[str, object]
) -> None:
    user = await account(client)
    assert (await patch_user(client, boss, user.id, body)).status_code == 400
    found = await client.get("/api/admin/users", params={"query": user.email}, headers=boss.auth)
    assert [(a["role"], a["disabled"]) for a in found.json()["data"]] == [("user", False)]


# ---- roles --------------------------------------------------------------------------------------


async def test_a_user_made_admin_can_use_admin_routes_at_once(
    client: httpx.AsyncClient, db: asyncpg.Connection, boss: Account
) -> None:
    user = await account(client)
    assert (await client.get("/api/admin/users", headers=user.auth)).status_code == 403
    changed = await patch_user(client, boss, user.id, {"role": "admin"})
    assert changed.json()["role"] == "admin"
    assert (await client.get("/api/admin/users", headers=user.auth)).status_code == 200
    [event] = await audittrail.events(db, subject_id=user.id, action_prefix=audittrail.ADMIN_ROLE)
    assert (event.actor_id, event.detail) == (boss.id, {"from": "user", "to": "admin"})


async def test_an_admin_cannot_take_their_own_admin_role(client: httpx.AsyncClient, boss: Account) -> None:
    refused = await patch_user(client, boss, boss.id, {"role": "user"})
    assert (refused.status_code, refused.json()["error"]["param"]) == (400, "role")


# ---- the audit trail ----------------------------------------------------------------------------


async def test_a_user_sees_their_own_events_only(client: httpx.AsyncClient) -> None:
    user = await account(client)
    other = await account(client)
    answer = await client.get("/api/audit/events", headers=user.auth)
    assert answer.status_code == 200, answer.text
    events = answer.json()["data"]
    assert events and {e["subject_id"] for e in events} == {user.id}
    assert events[0]["action"] == audittrail.LOGIN_SUCCEEDED and events[0]["label"] == "Logged in"
    assert other.id not in {e["subject_id"] for e in events}


async def test_a_user_asking_for_everyones_events_is_refused(client: httpx.AsyncClient) -> None:
    user = await account(client)
    answer = await client.get("/api/audit/events", params={"all": "1"}, headers=user.auth)
    assert (answer.status_code, answer.json()["error"]["param"]) == (403, "all")


async def test_an_admin_sees_everyones_events_narrowed_by_kind(client: httpx.AsyncClient, boss: Account) -> None:
    user = await account(client)
    await patch_user(client, boss, user.id, {"disabled": True})
    answer = await client.get("/api/audit/events", params={"all": "1", "action": "admin."}, headers=boss.auth)
    events = answer.json()["data"]
    assert events and all(e["action"].startswith("admin.") for e in events)
    mine = [e for e in events if e["subject_id"] == user.id]
    assert [(e["action"], e["actor_email"]) for e in mine] == [(audittrail.ADMIN_DISABLE, boss.email)]


async def test_events_page_back_with_next_before_id(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    user = await account(client)
    for n in range(3):
        await audittrail.record(db, audittrail.KEY_CREATED, subject_id=user.id, target_id=str(n))
    first = (await client.get("/api/audit/events", params={"limit": "2", "action": "key."}, headers=user.auth)).json()
    older = first["next_before_id"]
    second = (
        await client.get(
            "/api/audit/events", params={"limit": "2", "action": "key.", "before_id": older}, headers=user.auth
        )
    ).json()
    assert [e["target_id"] for e in first["data"] + second["data"]] == ["2", "1", "0"]
    assert second["next_before_id"] is None


@pytest.mark.parametrize(("name", "value"), [("before_id", "x"), ("limit", "0"), ("action", "DROP"), ("all", "maybe")])
async def test_a_bad_events_parameter_is_400_naming_it(client: httpx.AsyncClient, name: str, value: str) -> None:
    user = await account(client)
    answer = await client.get("/api/audit/events", params={name: value}, headers=user.auth)
    assert (answer.status_code, answer.json()["error"]["param"]) == (400, name)


async def test_an_admins_credit_is_in_the_buyers_activity(client: httpx.AsyncClient, boss: Account) -> None:
    buyer = await account(client)
    body = {"email": buyer.email, "amount_usd": "12.50", "reason": "launch promo"}
    assert (await client.post("/api/admin/credits", json=body, headers=boss.auth)).status_code == 201
    events = (await client.get("/api/audit/events", params={"action": "admin."}, headers=buyer.auth)).json()["data"]
    assert [(e["action"], e["actor_email"], e["detail"]) for e in events] == [
        (audittrail.ADMIN_CREDIT, boss.email, {"amount_usd": "12.500000", "reason": "launch promo"})
    ]


# ---- payouts and the ledger audit ---------------------------------------------------------------


async def test_an_admin_lists_pending_payouts_and_a_cancel_is_in_the_sellers_activity(
    client: httpx.AsyncClient, db: asyncpg.Connection, boss: Account
) -> None:
    seller = await account(client, "seller")
    await earn(db, seller.id, 60 * USD, at=datetime.now(UTC) - timedelta(days=30))
    requested = await client.post("/api/seller/payouts", json={}, headers=seller.auth)
    assert requested.status_code == 201, requested.text
    payout_id = requested.json()["id"]
    listed = (await client.get("/api/admin/payouts", headers=boss.auth)).json()["data"]
    assert [(p["id"], p["seller_email"]) for p in listed if p["seller_email"] == seller.email] == [
        (payout_id, seller.email)
    ]
    assert (await client.post(f"/api/admin/payouts/{payout_id}/cancel", headers=boss.auth)).status_code == 200
    assert payout_id not in {
        p["id"] for p in (await client.get("/api/admin/payouts", headers=boss.auth)).json()["data"]
    }
    [event] = await audittrail.events(db, subject_id=seller.id, action_prefix=audittrail.PAYOUT_CHANGED)
    assert (event.actor_id, event.target_id, event.detail["decision"]) == (boss.id, payout_id, "cancelled")


async def test_an_audit_run_is_kept_and_shown_as_the_last_one(client: httpx.AsyncClient, boss: Account) -> None:
    ran = await client.post("/api/admin/audit-runs", headers=boss.auth)
    assert ran.status_code == 201, ran.text
    assert (ran.json()["ok"], ran.json()["findings"], ran.json()["ran_by_email"]) == (True, [], boss.email)
    last = (await client.get("/api/admin/audit-runs/last", headers=boss.auth)).json()["run"]
    assert last["id"] == ran.json()["id"]


async def test_an_audit_run_reports_a_broken_ledger(
    client: httpx.AsyncClient, db: asyncpg.Connection, boss: Account
) -> None:
    account_id = await db.fetchval("SELECT id FROM ledger_accounts ORDER BY id LIMIT 1")
    if account_id is None:
        await earn(db, (await account(client)).id, USD)
        account_id = await db.fetchval("SELECT id FROM ledger_accounts ORDER BY id LIMIT 1")
    await db.execute("UPDATE ledger_accounts SET balance_micro = balance_micro + 1 WHERE id = $1", account_id)
    try:
        ran = (await client.post("/api/admin/audit-runs", headers=boss.auth)).json()
    finally:
        await db.execute("UPDATE ledger_accounts SET balance_micro = balance_micro - 1 WHERE id = $1", account_id)
    assert ran["ok"] is False
    assert any(f.startswith("balances_sum_to_zero") for f in ran["findings"])


async def test_the_command_line_audit_is_kept_as_the_last_run_too(
    client: httpx.AsyncClient, database_url: str, boss: Account
) -> None:
    cli = str(Path(sys.executable).with_name("aichat-gateway"))
    env = {**os.environ, "DATABASE_URL": database_url, "GATEWAY_SECRET_KEY": TEST_SECRET}
    done = await asyncio.create_subprocess_exec(cli, "audit", env=env, stdout=asyncio.subprocess.DEVNULL)
    assert await done.wait() == 0
    last = (await client.get("/api/admin/audit-runs/last", headers=boss.auth)).json()["run"]
    assert (last["ok"], last["ran_by_email"]) == (True, None)
