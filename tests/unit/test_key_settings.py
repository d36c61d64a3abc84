"""accounts/keysettings.py: a key's settings decided as pure functions (the routing check is injected)."""

from __future__ import annotations

from typing import Any

import pytest

from aichat_gateway import apibody
from aichat_gateway.accounts.errors import InvalidInput
from aichat_gateway.accounts.keysettings import NO_SETTINGS, KeySettings, changes_of, parse_routing, settings_of
from aichat_gateway.accounts.schemas import KeyCreate, KeyPatch
from aichat_gateway.server.services import validate_key_routing


def accept_any(value: object) -> dict[str, Any]:
    assert isinstance(value, dict)
    return dict(value)


def created(body: dict[str, Any]) -> KeySettings:
    """A create body's settings, read as the API reads them."""
    return settings_of(apibody.validate(KeyCreate, body, InvalidInput), accept_any)


def patched(body: dict[str, Any]) -> Any:
    return changes_of(apibody.validate(KeyPatch, body, InvalidInput), accept_any)


def test_a_cap_is_parsed_to_micro_usd() -> None:
    assert created({"name": "k", "daily_spend_cap_usd": "12.5"}).daily_cap_micro == 12_500_000


def test_a_null_cap_means_no_cap() -> None:
    assert created({"name": "k", "daily_spend_cap_usd": None}).daily_cap_micro is None


@pytest.mark.parametrize("value", ["0", "0.000000", "-1", "-0.000001"])
def test_a_cap_that_is_not_more_than_zero_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidInput, match="more than 0") as caught:
        created({"name": "k", "monthly_spend_cap_usd": value})
    assert caught.value.param == "monthly_spend_cap_usd"


@pytest.mark.parametrize("value", ["1e3", 1.5, "1.0000001", "", True])
def test_a_cap_that_is_not_an_exact_decimal_string_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        created({"name": "k", "daily_spend_cap_usd": value})
    assert caught.value.param == "daily_spend_cap_usd"
    assert caught.value.message.startswith("daily_spend_cap_usd ")


def test_empty_routing_is_the_same_as_none() -> None:
    assert parse_routing({}, accept_any) is None


def test_absent_settings_on_create_are_none() -> None:
    assert created({"name": "k"}) == NO_SETTINGS


def test_settings_show_caps_as_decimal_strings_and_none_as_null() -> None:
    shown = KeySettings(routing={"sort": "price"}, daily_cap_micro=1).public()
    assert shown == {"routing": {"sort": "price"}, "daily_spend_cap_usd": "0.000001", "monthly_spend_cap_usd": None}


def test_a_patch_remembers_which_fields_it_sets_null_included() -> None:
    changes = patched({"daily_spend_cap_usd": None, "name": " n "})
    assert changes.given == {"daily_spend_cap_usd", "name"}
    assert changes.name == "n" and changes.settings.daily_cap_micro is None
    assert not changes.sets("routing") and not changes.sets("monthly_spend_cap_usd")


def test_a_patch_outside_the_allow_list_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        patched({"name": "n", "user_id": "x"})
    assert caught.value.param == "user_id"
    assert "daily_spend_cap_usd" in caught.value.message, "the message names the fields that may change"


def test_an_empty_patch_is_refused() -> None:
    with pytest.raises(InvalidInput, match="nothing to change"):
        patched({})


@pytest.mark.parametrize("value", [None, "", " ", 7, "x" * 101])
def test_a_patch_cannot_clear_or_garble_the_name(value: object) -> None:
    with pytest.raises(InvalidInput) as caught:
        patched({"name": value})
    assert caught.value.param == "name"


# ---- the app factory's validator: the marketplace parser, renamed for accounts -----------------


def test_the_routing_validator_normalises_like_a_request_provider_object() -> None:
    routing = {"ignore": ["b", "a"], "max_price": {"completion": "6"}, "sort": "price", "order": None}
    assert validate_key_routing(routing) == {
        "ignore": ["a", "b"],
        "max_price": {"completion": "6.000000"},
        "sort": "price",
    }


@pytest.mark.parametrize(
    ("routing", "param"),
    [({"max_price": {"prompt": 1.5}}, "routing.max_price.prompt"), ({"x": 1}, "routing.x"), (3, "routing")],
)
def test_the_routing_validator_refuses_in_accounts_terms(routing: object, param: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        validate_key_routing(routing)
    assert caught.value.param == param
    assert caught.value.message.startswith("routing") and "provider" not in caught.value.message
