"""The audit trail's store: events with actor, time and target, each user's own, admins all."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest

from aichat_gateway import audittrail
from tests.support.emails import unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
PASSWORD = "correct horse battery staple"


async def _user(client: httpx.AsyncClient) -> tuple[str, str]:
    email = unique_email()
    response = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201
    return response.json()["id"], email


async def test_a_login_and_a_failed_one_are_events_of_that_account(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id, email = await _user(client)
    assert (
        await client.post("/api/auth/login", json={"email": email, "password": "wrong password!"})
    ).status_code == 401
    assert (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).status_code == 200
    found = await audittrail.events(db, subject_id=user_id)
    assert [e.action for e in found] == [audittrail.LOGIN_SUCCEEDED, audittrail.LOGIN_FAILED]
    assert found[0].actor_id == user_id and found[1].actor_id is None


async def test_a_failed_login_for_an_unknown_address_is_seen_by_admins_only(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    email = unique_email()
    assert (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).status_code == 401
    everyone = await audittrail.events(db, subject_id=None, everyone=True, action_prefix="login.")
    assert any(e.subject_id is None and e.action == audittrail.LOGIN_FAILED for e in everyone)


async def test_one_user_never_sees_another_users_events(client: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    a, _ = await _user(client)
    b, _ = await _user(client)
    await audittrail.record(db, audittrail.KEY_CREATED, subject_id=a, actor_id=a, target_type="key", target_id="k1")
    assert await audittrail.events(db, subject_id=b) == []
    mine = await audittrail.events(db, subject_id=a)
    assert [(e.action, e.target_id) for e in mine] == [(audittrail.KEY_CREATED, "k1")]


async def test_pages_go_back_in_time_by_id(db: asyncpg.Connection, client: httpx.AsyncClient) -> None:
    a, _ = await _user(client)
    for n in range(5):
        await audittrail.record(db, audittrail.KEY_CREATED, subject_id=a, target_id=str(n))
    first = await audittrail.events(db, subject_id=a, limit=2)
    second = await audittrail.events(db, subject_id=a, limit=2, before_id=first[-1].id)
    assert [e.target_id for e in first + second] == ["4", "3", "2", "1"]


async def test_an_unknown_subject_has_no_events(db: asyncpg.Connection) -> None:
    assert await audittrail.events(db, subject_id=str(uuid.uuid4())) == []
