"""apibody: request bodies read into pydantic models, refused in the package's own error class with
`param` the field's path and a message naming it (never quoting the value)."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import AfterValidator, Field

from aichat_gateway.apibody import Body, Settable, UsdAmount, parse


class Refused(Exception):
    """A package's error class, as apibody calls it: `Refused(message, param=...)`."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def _even(value: int) -> int:
    if value % 2:
        raise ValueError("count must be even")
    return value


class Item(Body):
    name: str
    count: Annotated[int, AfterValidator(_even)] = 0


class Order(Body):
    email: str
    password: str
    n: int = 0
    amount_usd: UsdAmount | None = None
    items: Annotated[list[Item], Field(max_length=3)] = []


class Patch(Body):
    name: Settable[str] = None


ORDER = b'{"email": "a@b.co", "password": "x"}'


def refusal(body: bytes, model: type[Body] = Order) -> Refused:
    with pytest.raises(Refused) as caught:
        parse(model, body, Refused)
    return caught.value


def test_a_body_with_allowed_fields_is_read_into_its_model() -> None:
    order = parse(Order, b'{"email": "a@b.co", "password": "x", "amount_usd": "12.5"}', Refused)
    assert (order.email, order.password, order.amount_usd) == ("a@b.co", "x", 12_500_000)


def test_bad_json_is_refused_without_a_param() -> None:
    error = refusal(b'{"email": ')
    assert error.param is None and "JSON" in error.message


def test_a_json_array_is_refused() -> None:
    error = refusal(b"[]")
    assert error.param is None and "object" in error.message


def test_a_missing_field_is_refused_naming_it() -> None:
    error = refusal(b'{"email": "a@b.co"}')
    assert (error.param, error.message) == ("password", "password is required")


def test_an_unknown_field_is_refused_naming_it_and_the_fields_there_are() -> None:
    error = refusal(b'{"email": "a@b.co", "password": "x", "role": "admin"}')
    assert error.param == "role"
    assert "unknown field 'role'" in error.message and "email, password" in error.message


def test_an_unknown_field_is_reported_before_the_field_it_was_probably_meant_to_be() -> None:
    assert refusal(b'{"email": "a@b.co", "pasword": "x"}').param == "pasword"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b'{"email": 1, "password": "x"}', "email", "email must be a string"),
        (b'{"email": "a", "password": "x", "n": true}', "n", "n must be an integer"),
        (b'{"email": "a", "password": "x", "n": "1"}', "n", "n must be an integer"),
        (b'{"email": "a", "password": "x", "n": 1.0}', "n", "n must be an integer"),
        (b'{"email": "a", "password": "x", "items": {}}', "items", "items must be an array"),
    ],
)
def test_a_field_of_the_wrong_type_is_refused_naming_it_and_nothing_is_coerced(
    body: bytes, param: str, message: str
) -> None:
    error = refusal(body)
    assert (error.param, error.message) == (param, message)


def test_money_as_a_json_number_is_refused_naming_the_field() -> None:
    error = refusal(b'{"email": "a", "password": "x", "amount_usd": 12.5}')
    assert error.param == "amount_usd" and "decimal string" in error.message


def test_a_problem_inside_a_list_item_is_named_by_its_path() -> None:
    error = refusal(b'{"email": "a", "password": "x", "items": [{"name": "a"}, {"name": "b", "count": 3}]}')
    assert (error.param, error.message) == ("items.1.count", "count must be even")


def test_an_unknown_field_inside_a_list_item_is_named_by_its_path_with_the_items_fields() -> None:
    error = refusal(b'{"email": "a", "password": "x", "items": [{"name": "a", "colour": 1}]}')
    assert error.param == "items.0.colour"
    assert "name, count" in error.message


def test_a_constraint_is_worded_as_a_rule_on_the_field() -> None:
    items = b", ".join([b'{"name": "a"}'] * 4)
    error = refusal(b'{"email": "a", "password": "x", "items": [' + items + b"]}")
    assert error.param == "items" and error.message.startswith("items must have at most 3 items")


@pytest.mark.parametrize(
    "body", [b'{"email": "a@b.co", "password": 12345678901}', b'{"email": "a@b.co", "password": "x", "n": "secret-1"}']
)
def test_the_refusal_never_echoes_a_field_value(body: bytes) -> None:
    error = refusal(body)
    assert "12345678901" not in error.message and "secret-1" not in error.message


def test_a_very_long_unknown_field_name_is_shortened_in_the_error() -> None:
    error = refusal(b'{"' + b"z" * 500 + b'": 1}')
    assert error.param is not None and len(error.param) < 100 and len(error.message) < 300


def test_an_empty_body_reads_as_the_given_default_when_there_is_one() -> None:
    assert parse(Patch, b"  \n", Refused, empty={}) == Patch()
    with pytest.raises(Refused):
        parse(Patch, b"", Refused)


def test_a_patch_field_may_be_left_out_but_not_set_to_null_and_is_documented_so() -> None:
    assert parse(Patch, b"{}", Refused).model_fields_set == set()
    error = refusal(b'{"name": null}', Patch)
    assert error.param == "name" and "null" in error.message
    assert Patch.model_json_schema()["properties"]["name"] == {"title": "Name", "type": "string"}
