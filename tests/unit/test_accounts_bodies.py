"""Request bodies: JSON objects with an explicit allow-list of fields."""

from __future__ import annotations

import pytest

from aichat_gateway.accounts.bodies import parse_object
from aichat_gateway.accounts.errors import InvalidInput

FIELDS = {"email": str, "password": str}


def _refusal(body: bytes, fields: dict[str, type] = FIELDS) -> InvalidInput:
    with pytest.raises(InvalidInput) as caught:
        parse_object(body, fields)
    return caught.value


def test_a_body_with_exactly_the_allowed_fields_is_returned() -> None:
    parsed = parse_object(b'{"email": "a@b.co", "password": "x"}', FIELDS)
    assert parsed == {"email": "a@b.co", "password": "x"}


def test_bad_json_is_refused_without_a_param() -> None:
    refusal = _refusal(b'{"email": ')
    assert refusal.param is None and "JSON" in refusal.message


def test_a_json_array_is_refused() -> None:
    assert "object" in _refusal(b"[]").message


def test_a_missing_field_is_refused_naming_it() -> None:
    assert _refusal(b'{"email": "a@b.co"}').param == "password"


def test_an_unknown_field_is_refused_naming_it() -> None:
    assert _refusal(b'{"email": "a@b.co", "password": "x", "role": "admin"}').param == "role"


def test_a_field_of_the_wrong_type_is_refused_naming_it() -> None:
    assert _refusal(b'{"email": 1, "password": "x"}').param == "email"


def test_a_boolean_is_not_accepted_as_an_integer() -> None:
    assert _refusal(b'{"n": true}', {"n": int}).param == "n"


def test_the_refusal_never_echoes_a_field_value() -> None:
    refusal = _refusal(b'{"email": "a@b.co", "password": 12345678901}')
    assert "12345678901" not in refusal.message


def test_a_very_long_unknown_field_name_is_shortened_in_the_error() -> None:
    refusal = _refusal(b'{"' + b"z" * 500 + b'": 1}')
    assert refusal.param is not None and len(refusal.param) < 100
