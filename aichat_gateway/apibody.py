"""Request bodies of the REST API (`/api`): pydantic models, read and refused in one place.

Each package declares its bodies in its own `schemas.py` as models on `Body`: unknown fields are
refused (a client sending `role` to register must learn it had no effect, and a typo must not
silently drop a setting) and nothing is coerced (`"1"` is not a number, `1` is not a string,
`true` is not an integer). Handlers call `read(request, Model, error)`: the body under a size cap
(`httpbody.read_capped`), parsed with orjson, validated. A refusal is raised as the caller's own
error class (each package's tree, mapped to HTTP once in proxy/edge.py), so the wire shape stays
OpenAI's: one problem per answer, `param` the field's path (`pricing.input_usd_per_million`,
`models.0.model`), a message naming that path and never quoting the value (it could be a
password). An unknown field is reported before any other problem: a misspelt field is usually
why another one is "missing".

Optional fields are `X | None` (null accepted) or `Settable[X]` (null refused), never wider unions:
pydantic names a union's members in an error's location, which would end up in `param`.

Business rules stay where they live, as pure functions; a model's validators call them and turn
their refusals into ValueError, whose message (naming the field) is used as it is. Money crosses
as decimal strings (`config/money.py`'s grammar), never floats.

The `/v1` surface does not come here: the hot path parses its own bodies (proxy/inbound.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar, get_args

import orjson
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import ErrorDetails
from starlette.requests import Request

from aichat_gateway.config import money
from aichat_gateway.httpbody import read_capped
from aichat_gateway.queryparams import ParamError

MAX_BODY_BYTES = 16 * 1024
_SHOWN_CHARS = 64

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    """A request body: closed (unknown fields refused) and strict (no type coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Answer(BaseModel):
    """A response body, for the OpenAPI document: every field listed is always present (null where
    the type allows it); the shape stays open, since fields may be added (never renamed)."""

    model_config = ConfigDict(frozen=True)


# ---- shared field types --------------------------------------------------------------------------


def _usd_micro(value: object, info: ValidationInfo) -> int:
    return money.parse_usd_micro(value, name=info.field_name or "amount")


# A decimal USD string in a request → integer micro-USD (config/money.py's grammar: no floats, no
# exponent, at most six places). Sign rules (more than zero, whole cents...) are the caller's.
UsdAmount = Annotated[
    int,
    PlainValidator(_usd_micro),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[0-9]{1,13}(\.[0-9]{1,6})?$",
            "description": "USD as a decimal string, at most six places",
            "examples": ["20.00"],
        }
    ),
]
# An amount in an answer: USD with six places ("12.345678"), as `money.usd` writes it.
Usd = Annotated[
    str,
    Field(
        pattern=r"^-?[0-9]+\.[0-9]{6}$", description="USD as a decimal string with six places", examples=["12.345678"]
    ),
]


# ---- reading ---------------------------------------------------------------------------------------


async def read(
    request: Request,
    model: type[M],
    error: ParamError,
    *,
    max_bytes: int = MAX_BODY_BYTES,
    too_large: Callable[[], Exception] | None = None,
    empty: Mapping[str, object] | None = None,
) -> M:
    """The request's body as `model`, or `error` (the caller's class) saying what is wrong.

    `too_large` is raised for a body over `max_bytes` (default: `error` saying so); with `empty`, a
    body of nothing but whitespace reads as that object (e.g. `{}`: "everything available").
    """
    raw = await read_capped(
        request, max_bytes, too_large or (lambda: error(f"request body is larger than {max_bytes} bytes"))
    )
    return parse(model, raw, error, empty=empty)


def parse(model: type[M], raw: bytes, error: ParamError, *, empty: Mapping[str, object] | None = None) -> M:
    """Pure: JSON bytes → `model`, or `error`."""
    if empty is not None and not raw.strip():
        return validate(model, dict(empty), error)
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise error("request body is not valid JSON") from None
    return validate(model, data, error)


def validate(model: type[M], data: object, error: ParamError) -> M:
    """Pure: parsed JSON → `model`, or `error` naming the first problem's field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise refusal(exc, model, error) from None


# ---- pydantic's errors → the API's ----------------------------------------------------------------


def refusal(exc: ValidationError, model: type[BaseModel], error: ParamError) -> Exception:
    """One problem of `exc` as `error(message, param=path)`: an unknown field first, else the first
    in the body's order."""
    problems = exc.errors(include_url=False, include_input=False)
    first = min(problems, key=lambda problem: problem["type"] != "extra_forbidden")
    path = field_path(first["loc"])
    return error(_message(first, path, model), param=path or None)


def problems(exc: ValidationError, model: type[BaseModel]) -> dict[str, str]:
    """Every problem of `exc`, the first per field: `{path: message}` in the API's wording (the
    dashboard's forms show each next to its field)."""
    found: dict[str, str] = {}
    for problem in exc.errors(include_url=False, include_input=False):
        path = field_path(problem["loc"])
        found.setdefault(path, _message(problem, path, model))
    return found


def field_path(loc: tuple[int | str, ...]) -> str:
    """`("models", 0, "model")` → `"models.0.model"`; a long part (an unknown field's name is the
    caller's text) is cut short."""
    return ".".join(_shown(str(part)) for part in loc)


def _shown(part: str) -> str:
    return part if len(part) <= _SHOWN_CHARS else part[:_SHOWN_CHARS] + "…"


# pydantic's wording, as the rest of the API words it (pydantic's own messages never quote the
# value either: `include_input=False` above, and none of these templates holds it).
_PHRASES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "list_type": "must be an array",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}
_OBJECT = ("dict_type", "model_type", "model_attributes_type")
# "Input should be greater than or equal to 1", "String should have at most 100 characters"...
_SHOULD = re.compile(r"^(?:Input|String|List|Value|Dictionary|Object|Decimal) should ")


def _message(problem: ErrorDetails, path: str, model: type[BaseModel]) -> str:
    kind = problem["type"]
    if kind == "value_error":  # a rule's own message, which names its field
        return str(problem.get("ctx", {}).get("error", problem["msg"]))
    if not path:
        return "request body must be a JSON object" if kind in _OBJECT else problem["msg"]
    if kind == "extra_forbidden":
        known = ", ".join(_fields_at(model, problem["loc"][:-1]))
        return f"unknown field '{path}'" + (f"; the fields are {known}" if known else "")
    phrase = _PHRASES.get(kind) or _SHOULD.sub("must ", problem["msg"], count=1)
    return f"{path} {phrase}"


def _fields_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The fields of the object at `loc` in a `model` body (its nested models, lists of them)."""
    current: object = model
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: its type was found with the list's field
        fields = current.model_fields if isinstance(current, type) and issubclass(current, BaseModel) else {}
        if part not in fields:
            return []
        current = _model_in(fields[part].annotation)
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _model_in(annotation: object) -> object:
    """The model class in a field's type (`Limits | None`, `list[ModelEntry]`), if there is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _refuse_null(value: Any, info: ValidationInfo) -> Any:
    if value is None:
        raise ValueError(f"{info.field_name} cannot be null; leave it out to keep it as it is")
    return value


def _without_null(schema: dict[str, Any]) -> None:
    """The field's JSON Schema as if it were not optional: null is refused, leaving it out is not."""
    branches = schema.pop("anyOf", None)
    schema.pop("default", None)
    if branches is not None:
        schema.update(next(branch for branch in branches if branch != {"type": "null"}))


T = TypeVar("T")
# A PATCH field that may be left out (then None: unchanged) but not sent as null.
Settable = Annotated[T | None, BeforeValidator(_refuse_null), Field(json_schema_extra=_without_null)]
