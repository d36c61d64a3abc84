"""The key pages (`/app/keys`) on the app: the same rules and audit events as `/api/keys`, the secret
shown once, errors next to their fields with what was typed kept, nothing changed on failure, and
every key scoped to its owner."""

from __future__ import annotations

import re
import uuid

import asyncpg
import httpx
import pytest

from tests.support.emails import unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]
PASSWORD = "correct horse battery staple"
SECRET = re.compile(r"agw-[A-Za-z0-9_-]{43}")


async def sign_up(client: httpx.AsyncClient) -> str:
    """Register through the page (the client keeps the session cookies); the user's id."""
    email = unique_email("keys")
    answer = await client.post("/register", data={"email": email, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    me = await client.get("/api/auth/me")
    user_id: str = me.json()["id"]
    return user_id


def form(client: httpx.AsyncClient, **fields: str) -> dict[str, str]:
    return {"csrf_token": client.cookies["aichat_csrf"], "allow_fallbacks": "on", **fields}


async def keys_of(db: asyncpg.Connection, user_id: str) -> list[asyncpg.Record]:
    return await db.fetch(
        "SELECT id, name, revoked_at, daily_spend_cap_micro, routing::text AS routing FROM api_keys "
        "WHERE user_id = $1 ORDER BY created_at",
        uuid.UUID(user_id),
    )


async def create(client: httpx.AsyncClient, name: str = "laptop", **fields: str) -> httpx.Response:
    return await client.post("/app/keys", data=form(client, name=name, **fields))


async def test_a_new_key_is_shown_once_with_a_quickstart_that_holds_it(client: httpx.AsyncClient) -> None:
    await sign_up(client)
    created = await create(client)
    assert created.status_code == 200
    [secret] = set(SECRET.findall(created.text))
    assert "you will not see it again" in created.text
    assert created.text.count(secret) == 4  # the key itself, then curl, Python and JavaScript
    assert "http://gateway.test/v1" in created.text
    listed = await client.get("/app/keys")
    assert secret not in listed.text and secret[:12] in listed.text


async def test_a_key_made_on_the_page_works_on_v1(client: httpx.AsyncClient) -> None:
    await sign_up(client)
    [secret] = set(SECRET.findall((await create(client)).text))
    answer = await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 200


async def test_a_bad_cap_is_shown_next_to_its_field_with_what_was_typed_and_nothing_is_created(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id = await sign_up(client)
    answer = await create(client, name="ci runner", daily_spend_cap_usd="-3")
    assert answer.status_code == 400
    assert 'id="f-daily_spend_cap_usd-error"' in answer.text
    assert 'value="ci runner"' in answer.text and 'value="-3"' in answer.text
    assert await keys_of(db, user_id) == []


async def test_a_bad_price_ceiling_is_refused_in_the_routing_parsers_words_next_to_its_field(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id = await sign_up(client)
    answer = await create(client, max_completion_price="cheap")
    assert answer.status_code == 400
    error = re.search(r'id="f-max_completion_price-error">([^<]+)<', answer.text)
    assert error is not None and "routing.max_price.completion" in error.group(1)
    assert await keys_of(db, user_id) == []


async def test_an_empty_name_is_refused_next_to_the_name_field(client: httpx.AsyncClient) -> None:
    await sign_up(client)
    answer = await create(client, name="  ")
    assert answer.status_code == 400 and 'id="f-name-error"' in answer.text


async def test_editing_a_key_sets_its_caps_and_routing_and_keeps_what_the_form_does_not_show(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id = await sign_up(client)
    await create(client)
    [key] = await keys_of(db, user_id)
    await db.execute("""UPDATE api_keys SET routing = '{"ignore": ["lst_x"]}' WHERE id = $1""", key["id"])
    fields = form(client, name="laptop 2", sort="price", daily_spend_cap_usd="2.5")
    answer = await client.post(f"/app/keys/{key['id']}", data=fields)
    assert (answer.status_code, answer.headers["location"]) == (303, f"/app/keys/{key['id']}?saved=1")
    [changed] = await keys_of(db, user_id)
    assert changed["name"] == "laptop 2" and changed["daily_spend_cap_micro"] == 2_500_000
    assert '"ignore": ["lst_x"]' in changed["routing"] and '"sort": "price"' in changed["routing"]


async def test_a_bad_edit_changes_nothing_and_shows_the_error(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id = await sign_up(client)
    await create(client)
    [before] = await keys_of(db, user_id)
    answer = await client.post(f"/app/keys/{before['id']}", data=form(client, name="new", monthly_spend_cap_usd="x"))
    assert answer.status_code == 400 and 'id="f-monthly_spend_cap_usd-error"' in answer.text
    assert await keys_of(db, user_id) == [before]


async def test_revoking_asks_first_then_revokes_and_the_key_stops_on_v1(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id = await sign_up(client)
    [secret] = set(SECRET.findall((await create(client)).text))
    [key] = await keys_of(db, user_id)
    confirm = await client.get(f"/app/keys/{key['id']}/revoke")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    assert (await keys_of(db, user_id))[0]["revoked_at"] is None
    done = await client.post(f"/app/keys/{key['id']}/revoke", data=form(client))
    assert (done.status_code, done.headers["location"]) == (303, f"/app/keys?revoked={key['id']}")
    assert (await keys_of(db, user_id))[0]["revoked_at"] is not None
    assert (await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})).status_code == 401
    listed = await client.get(done.headers["location"])
    assert "Key “laptop” revoked" in listed.text


async def test_another_users_key_is_a_404_page_and_cannot_be_revoked(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    owner_id = await sign_up(client)
    await create(client)
    [key] = await keys_of(db, owner_id)
    client.cookies.clear()
    await sign_up(client)
    assert (await client.get(f"/app/keys/{key['id']}")).status_code == 404
    assert (await client.post(f"/app/keys/{key['id']}/revoke", data=form(client))).status_code == 404
    assert (await keys_of(db, owner_id))[0]["revoked_at"] is None


async def test_a_revoke_post_without_the_csrf_field_revokes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id = await sign_up(client)
    await create(client)
    [key] = await keys_of(db, user_id)
    answer = await client.post(f"/app/keys/{key['id']}/revoke", data={})
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
    assert (await keys_of(db, user_id))[0]["revoked_at"] is None


async def test_the_key_pages_need_a_login(client: httpx.AsyncClient) -> None:
    answer = await client.get("/app/keys")
    assert (answer.status_code, answer.headers["location"]) == (303, "/login?next=/app/keys")


# ---- the audit trail: the same events whichever door ---------------------------------------------


async def actions(db: asyncpg.Connection, user_id: str) -> list[str]:
    rows = await db.fetch(
        "SELECT action FROM account_events WHERE subject_id = $1 AND action LIKE 'key.%' ORDER BY id",
        uuid.UUID(user_id),
    )
    return [r["action"] for r in rows]


async def test_creating_changing_and_revoking_on_the_pages_is_audited(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id = await sign_up(client)
    await create(client)
    [key] = await keys_of(db, user_id)
    await client.post(f"/app/keys/{key['id']}", data=form(client, name="renamed"))
    await client.post(f"/app/keys/{key['id']}/revoke", data=form(client))
    await client.post(f"/app/keys/{key['id']}/revoke", data=form(client))  # the second changes nothing
    assert await actions(db, user_id) == ["key.created", "key.changed", "key.revoked"]


async def test_creating_changing_and_revoking_through_the_api_is_audited(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id = await sign_up(client)
    csrf = {"x-csrf-token": client.cookies["aichat_csrf"]}
    created = await client.post("/api/keys", json={"name": "api"}, headers=csrf)
    key_id = created.json()["id"]
    await client.patch(f"/api/keys/{key_id}", json={"daily_spend_cap_usd": "1"}, headers=csrf)
    await client.delete(f"/api/keys/{key_id}", headers=csrf)
    assert await actions(db, user_id) == ["key.created", "key.changed", "key.revoked"]
    [event] = await db.fetch(
        "SELECT target_id, detail::text AS detail FROM account_events WHERE action = 'key.changed' AND subject_id = $1",
        uuid.UUID(user_id),
    )
    assert event["target_id"] == key_id and "daily_spend_cap_usd" in event["detail"]


async def test_a_revoked_keys_page_says_so_and_offers_no_settings_or_quickstart(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    user_id = await sign_up(client)
    await create(client)
    [key] = await keys_of(db, user_id)
    await client.post(f"/app/keys/{key['id']}/revoke", data=form(client))
    page = await client.get(f"/app/keys/{key['id']}")
    assert page.status_code == 200 and "This key is revoked" in page.text
    assert "Save changes" not in page.text and "Quickstart" not in page.text
