"""Reading the accounts API's JSON bodies: apibody.read with accounts' error, JSON only.

The models (schemas.py) refuse unknown fields rather than ignore them: a client sending `role` to
register must learn it had no effect. Errors name the field in `param` and never echo a value (it
could be a password).
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel
from starlette.requests import Request

from aichat_gateway import apibody
from aichat_gateway.accounts.errors import InvalidInput

MAX_BODY_BYTES = 16 * 1024
# What an HTML form can send cross-site without a CORS preflight. Refusing these closes
# login CSRF (a hostile page logging the victim's browser into the attacker's account).
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain")

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, model: type[M]) -> M:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in _FORM_TYPES:
        raise InvalidInput("Content-Type must be application/json")
    return await apibody.read(request, model, InvalidInput, max_bytes=MAX_BODY_BYTES)
