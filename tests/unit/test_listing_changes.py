"""What a listing PATCH may change, and who may change it: the body read as the API reads it
(schemas.ListingPatch), then marketplace/changes.py (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from aichat_gateway import apibody
from aichat_gateway.config.catalog import load_catalog
from aichat_gateway.marketplace.changes import ListingChanges, NewEndpoint, parse_changes
from aichat_gateway.marketplace.errors import InvalidListing
from aichat_gateway.marketplace.listings import LIMIT_FIELDS
from aichat_gateway.marketplace.schemas import Limits, ListingPatch

URL, KEY = "https://api.example.com/v1", "sk-new-key-0123456789"


def parse(body: dict[str, Any], *, is_owner: bool = True, is_admin: bool = False) -> ListingChanges:
    return parse_changes(
        apibody.validate(ListingPatch, body, InvalidListing),
        is_owner=is_owner,
        is_admin=is_admin,
        current_status="active",
        models=["gpt-4o-mini"],
        catalog=load_catalog(),
    )


def refusal(body: dict[str, Any], *, is_owner: bool = True, is_admin: bool = False) -> InvalidListing:
    with pytest.raises(InvalidListing) as caught:
        parse(body, is_owner=is_owner, is_admin=is_admin)
    return caught.value


@pytest.mark.parametrize("status", [[], {}, 1, True, ["active"]])
def test_a_status_that_is_not_a_string_is_a_400_naming_status(status: object) -> None:
    assert refusal({"status": status}, is_owner=False, is_admin=True).param == "status"


@pytest.mark.parametrize(
    "body",
    [{"base_url": URL}, {"api_key": KEY}, {"base_url": URL, "api_key": KEY}, {"status": "paused", "api_key": KEY}],
)
def test_an_admin_cannot_repoint_or_re_key_another_sellers_listing(body: dict[str, Any]) -> None:
    error = refusal(body, is_owner=False, is_admin=True)
    assert error.param in ("base_url", "api_key")
    assert "owner" in error.message


def test_a_new_base_url_without_its_api_key_is_refused_naming_api_key() -> None:
    assert refusal({"base_url": URL}).param == "api_key"


def test_a_new_base_url_comes_with_its_key_as_one_endpoint() -> None:
    assert parse({"base_url": URL, "api_key": KEY}).endpoint == NewEndpoint(api_key=KEY, base_url=URL)


def test_a_new_key_alone_keeps_the_listings_url() -> None:
    assert parse({"api_key": KEY}).endpoint == NewEndpoint(api_key=KEY, base_url=None)


def test_changes_without_a_key_carry_no_endpoint() -> None:
    assert parse({"name": "renamed", "pricing": {"multiplier": "1.5"}}).endpoint is None


@pytest.mark.parametrize(
    "body",
    [{"status": "paused"}, {"status": "disabled", "status_reason": "abuse"}, {"name": "x"}, {"limits": {"rpm": 5}}],
)
def test_an_admin_may_still_pause_disable_explain_rename_and_limit_any_listing(body: dict[str, Any]) -> None:
    parse(body, is_owner=False, is_admin=True)


def test_an_admin_who_owns_the_listing_may_move_it_like_any_owner() -> None:
    changes = parse({"base_url": URL, "api_key": KEY, "status": "disabled"}, is_owner=True, is_admin=True)
    assert (changes.endpoint, changes.status) == (NewEndpoint(KEY, URL), "disabled")


@pytest.mark.parametrize("field", ["status_reason", "provider", "models"])
def test_a_seller_still_cannot_change_what_only_an_admin_or_nobody_may(field: str) -> None:
    assert refusal({field: "x"}).param == field


def test_the_limits_a_body_may_set_are_exactly_a_listings_limits() -> None:
    assert tuple(Limits.model_fields) == LIMIT_FIELDS
    assert apibody.validate(Limits, {"rpm": 5, "tpm": None}, InvalidListing).as_dict() == {"rpm": 5}
