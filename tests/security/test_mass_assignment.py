"""Mass assignment: fields a caller does not own, sent in bodies, are refused (400) and never applied."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.attack import PASSWORD, Account, Gateway, assert_error, listing_body, unique_email

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

NOT_YOURS = {
    "id": str(uuid.uuid4()),
    "role": "admin",
    "user_id": str(uuid.uuid4()),
    "owner_id": str(uuid.uuid4()),
    "seller_id": str(uuid.uuid4()),
    "created_at": "2000-01-01T00:00:00Z",
    "updated_at": "2000-01-01T00:00:00Z",
}


@pytest.mark.parametrize("extra", [{"role": "admin"}, {"role": "user"}, {"id": NOT_YOURS["id"]}, {"is_admin": True}])
async def test_registering_with_a_field_beyond_email_and_password_is_refused(
    gateway: Gateway, extra: dict[str, Any]
) -> None:
    email = unique_email("escalate")
    answer = await gateway.client.post("/api/auth/register", json={"email": email, "password": PASSWORD, **extra})
    assert_error(answer, 400, param=next(iter(extra)))
    assert await gateway.app.state.services.db.fetchval("SELECT count(*) FROM users WHERE email = $1", email) == 0


async def test_a_user_cannot_make_themself_admin_by_any_body_field(gateway: Gateway) -> None:
    user = await gateway.user("climber")
    for path, method in (("/api/keys", "POST"), ("/api/seller/payout-account", "PUT"), ("/api/seller/payouts", "POST")):
        answer = await gateway.client.request(method, path, json={"role": "admin"}, headers=user.auth)
        assert_error(answer, 400)
    assert await gateway.app.state.services.db.fetchval("SELECT role FROM users WHERE id = $1::uuid", user.id) == "user"
    assert_error(await gateway.client.post("/api/admin/credits", json={}, headers=user.auth), 403)


@pytest.mark.parametrize(
    "field", ["id", "user_id", "owner_id", "prefix", "key", "key_hash", "created_at", "last_used_at", "revoked_at"]
)
async def test_patching_a_key_field_outside_the_allow_list_is_refused_and_changes_nothing(
    gateway: Gateway, field: str
) -> None:
    owner, other = await gateway.user("key-owner"), await gateway.user("other")
    key = await gateway.create_key(owner, "mine")
    value = other.id if field.endswith("_id") or field == "id" else NOT_YOURS["created_at"]
    answer = await gateway.client.patch(f"/api/keys/{key['id']}", json={field: value}, headers=owner.auth)
    assert_error(answer, 400, param=field)
    [listed] = (await gateway.client.get("/api/keys", headers=owner.auth)).json()["data"]
    assert (listed["id"], listed["prefix"], listed["created_at"], listed["revoked_at"]) == (
        key["id"],
        key["prefix"],
        key["created_at"],
        None,
    )
    assert (await gateway.app.state.services.keys.lookup(key["key"])).user_id == owner.id


async def test_creating_a_key_for_someone_else_is_refused(gateway: Gateway) -> None:
    owner, other = await gateway.user("key-owner"), await gateway.user("other")
    answer = await gateway.client.post("/api/keys", json={"name": "planted", "user_id": other.id}, headers=owner.auth)
    assert_error(answer, 400, param="user_id")
    assert (await gateway.client.get("/api/keys", headers=other.auth)).json()["data"] == []


@pytest.mark.parametrize("field", ["seller_id", "status", "id", "public_id", "created_at", "key_last4"])
async def test_creating_a_listing_with_a_field_the_seller_does_not_own_is_refused(gateway: Gateway, field: str) -> None:
    seller, other = await gateway.user("seller"), await gateway.user("other")
    value = {"seller_id": other.id, "status": "active", "id": NOT_YOURS["id"]}.get(field, "x")
    answer = await gateway.client.post(
        "/api/marketplace/listings", json=listing_body(**{field: value}), headers=seller.auth
    )
    assert_error(answer, 400, param=field)
    assert (await gateway.client.get("/api/marketplace/listings", headers=seller.auth)).json()["data"] == []
    assert (await gateway.client.get("/api/marketplace/listings", headers=other.auth)).json()["data"] == []


SELLER_MAY_NOT: list[tuple[str, Any]] = [
    ("seller_id", None),
    ("id", NOT_YOURS["id"]),
    ("public_id", "lst_0000000000000000"),
    ("created_at", NOT_YOURS["created_at"]),
    ("updated_at", NOT_YOURS["updated_at"]),
    ("status", "disabled"),
    ("status", "invalid"),
    ("status_reason", "approved by the platform"),
    ("provider", "anthropic"),
    ("models", [{"model": "gpt-4o"}]),
    ("key_last4", "0000"),
    ("deleted_at", None),
    ("attested_at", None),
]


@pytest.mark.parametrize(("field", "value"), SELLER_MAY_NOT)
async def test_a_seller_patching_a_field_they_do_not_own_is_refused_and_changes_nothing(
    gateway: Gateway, field: str, value: Any
) -> None:
    seller, other = await gateway.user("seller"), await gateway.user("other")
    listing = await gateway.create_listing(seller)
    body = {field: other.id if field == "seller_id" else value}
    answer = await gateway.client.patch(f"/api/marketplace/listings/{listing['id']}", json=body, headers=seller.auth)
    assert_error(answer, 400)
    assert await current_listing(gateway, seller, listing["id"]) == listing


async def test_a_seller_cannot_reactivate_a_listing_an_admin_disabled(gateway: Gateway) -> None:
    seller, admin = await gateway.user("seller"), await gateway.admin()
    listing = await gateway.create_listing(seller)
    path = f"/api/marketplace/listings/{listing['id']}"
    disabled = await gateway.client.patch(
        path, json={"status": "disabled", "status_reason": "abuse"}, headers=admin.auth
    )
    assert disabled.status_code == 200 and disabled.json()["status"] == "disabled"
    for body in ({"status": "active"}, {"status": "paused"}, {"status": "active", "api_key": "sk-new-" + "k" * 20}):
        assert_error(await gateway.client.patch(path, json=body, headers=seller.auth), 400)
    shown = (await gateway.client.get(path, headers=seller.auth)).json()
    assert (shown["status"], shown["status_reason"]) == ("disabled", "abuse")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/seller/payouts", {"amount_usd": "10.00", "seller_id": NOT_YOURS["seller_id"]}),
        ("/api/seller/payouts", {"status": "paid"}),
        ("/api/billing/topups", {"amount_usd": "20.00", "user_id": NOT_YOURS["user_id"]}),
    ],
)
async def test_money_requests_refuse_fields_naming_another_owner_or_a_status(
    gateway: Gateway, path: str, body: dict[str, Any]
) -> None:
    user = await gateway.user("money")
    answer = await gateway.client.post(path, json=body, headers=user.auth)
    assert_error(answer, 400, param=next(iter(set(body) - {"amount_usd"})))
    assert (
        await gateway.app.state.services.db.fetchval("SELECT count(*) FROM payouts WHERE seller_id = $1::uuid", user.id)
        == 0
    )


async def test_a_payout_account_cannot_be_put_on_another_seller(gateway: Gateway) -> None:
    seller, other = await gateway.user("seller"), await gateway.user("other")
    body = {"stripe_account_id": "acct_1Planted0000000", "user_id": other.id}
    assert_error(await gateway.client.put("/api/seller/payout-account", json=body, headers=seller.auth), 400)
    assert (await gateway.client.get("/api/seller/payout-account", headers=other.auth)).json()[
        "stripe_account_id"
    ] is None


async def current_listing(gateway: Gateway, seller: Account, listing_id: str) -> dict[str, Any]:
    answer = await gateway.client.get(f"/api/marketplace/listings/{listing_id}", headers=seller.auth)
    assert answer.status_code == 200, answer.text
    shown: dict[str, Any] = answer.json()
    return shown
