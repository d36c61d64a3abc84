"""Reading small JSON request bodies against an explicit allow-list of fields.

Unknown fields are refused rather than ignored: a client sending `role` to register must learn it
had no effect, and a typo must not silently drop a setting. Errors name the field in `param` and
never echo a value (it could be a password).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import orjson
from starlette.requests import Request

from aichat_gateway.accounts.errors import InvalidInput
from aichat_gateway.httpbody import read_capped

MAX_BODY_BYTES = 16 * 1024
# What an HTML form can send cross-site without a CORS preflight. Refusing these closes
# login CSRF (a hostile page logging the victim's browser into the attacker's account).
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", list: "an array", dict: "an object"}


def _field_name(name: str) -> str:
    return name if len(name) <= 64 else name[:64] + "…"


def parse_object(body: bytes, fields: Mapping[str, type], *, optional: Collection[str] = ()) -> dict[str, object]:
    """Pure: the JSON object in `body`, holding exactly `fields` with those types.

    `optional` names fields that may also appear, any value (null included): their own parsers
    check them, with messages better than a bare type name.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidInput("request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("request body must be a JSON object")
    for name in data:
        if name not in fields and name not in optional:
            shown = _field_name(name)
            raise InvalidInput(f"unknown field '{shown}'", param=shown)
    for name, expected in fields.items():
        if name not in data:
            raise InvalidInput(f"missing field '{name}'", param=name)
        value = data[name]
        # bool is an int subclass; `true` is never an acceptable integer.
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise InvalidInput(f"'{name}' must be {_TYPE_NAMES.get(expected, expected.__name__)}", param=name)
    return data


async def read_object(
    request: Request,
    fields: Mapping[str, type],
    *,
    optional: Collection[str] = (),
    max_bytes: int = MAX_BODY_BYTES,
) -> dict[str, object]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _FORM_TYPES:
        raise InvalidInput("Content-Type must be application/json")
    body = await read_capped(request, max_bytes, lambda: InvalidInput(f"request body is larger than {max_bytes} bytes"))
    return parse_object(body, fields, optional=optional)
