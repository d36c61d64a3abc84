"""The OpenAPI 3.1 document of the REST API (`/api/*`), served at `GET /openapi.json`.

Generated, not written: every `/api` route is an `apiroute.ApiRoute` carrying its `Operation`
(declared next to its handler), and the document is built from the route table of the running
app and the JSON Schemas of the operations' pydantic models (each package's `schemas.py`),
gathered under `components/schemas` and referenced with `$ref`. A route declared any other way is
refused (TypeError naming it), so no `/api` operation goes undocumented; schemathesis fuzzes every
operation against the running app from this document (tests/security).

The OpenAI-compatible `/v1` surface is OpenAI's own and is not described here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from aichat_gateway.apibody import Answer
from aichat_gateway.apiroute import UUID, ApiRoute, Auth, Operation, Param

Schema = dict[str, Any]
PREFIX = "/api"
_REF = "#/components/schemas/{model}"
_ERROR_DESCRIPTIONS = {
    400: "Malformed JSON, fields or parameters (`param` names the field: `models.0.model`)",
    401: "No valid session",
    403: "Not allowed: an admin-only call, or a session cookie without its CSRF token on an unsafe method",
    404: "No such object for this caller (another user's objects look absent too)",
    409: "Conflict with the current state",
    413: "Body too large",
    429: "Too many attempts (see Retry-After)",
    503: "A store or Stripe is unreachable or not configured; retry shortly",
}
_SESSION_ERRORS = (401, 403, 503)
_SUCCESS = {200: "OK", 201: "Created", 202: "Accepted", 204: "Done"}
_SAFE_METHODS = frozenset({"GET", "HEAD"})

# A session for API clients, or the browser's cookie (unsafe methods: plus the CSRF header).
_BEARER: Schema = {"bearerAuth": []}
_COOKIE: Schema = {"sessionCookie": []}
_COOKIE_CSRF: Schema = {"sessionCookie": [], "csrfHeader": []}


class ErrorDetail(Answer):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str
    param: str | None
    code: str | None


class Error(Answer):
    """OpenAI's error shape, on every `/api` and `/v1` error."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema without a title on every field (it repeats the property's name)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def api_operations(routes: Iterable[BaseRoute]) -> list[ApiRoute]:
    """The routes, each checked to carry its OpenAPI metadata."""
    declared = []
    for route in routes:
        if not isinstance(route, ApiRoute):
            raise TypeError(
                f"every /api route must be declared with apiroute.api_route, carrying its OpenAPI metadata; {route!r}"
            )
        declared.append(route)
    return declared


def openapi_document(routes: Iterable[BaseRoute], version: str = "0.1.0") -> dict[str, Any]:
    """The whole document for these `/api` routes (paths relative to the `/api` mount), fresh each call."""
    operations = api_operations(routes)
    models: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(Error, "serialization"): None}
    for route in operations:
        if route.operation.body is not None:
            models[(route.operation.body, "validation")] = None
        for answer in route.operation.answers.values():
            if answer is not None:
                models[(answer, "serialization")] = None
    refs, definitions = models_json_schema(list(models), ref_template=_REF, schema_generator=_Generator)
    paths: dict[str, dict[str, Schema]] = {}
    for route in operations:
        paths.setdefault(PREFIX + route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AIChat Gateway REST API",
            "version": version,
            "description": (
                "Accounts, keys, the marketplace, billing and payouts. Money is a decimal string in USD. "
                "Errors use OpenAI's shape. The OpenAI-compatible /v1 surface is not described here."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "responses": {
                f"Error{status}": {
                    "description": description,
                    "content": {"application/json": {"schema": refs[(Error, "serialization")]}},
                    **({"headers": {"Retry-After": {"schema": {"type": "integer"}}}} if status == 429 else {}),
                }
                for status, description in _ERROR_DESCRIPTIONS.items()
            },
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "aichat_session"},
                "csrfHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-csrf-token",
                    "description": "The aichat_csrf cookie's value, on unsafe methods with the session cookie",
                },
            },
        },
    }


def _operation(route: ApiRoute, refs: Mapping[tuple[Any, JsonSchemaMode], Schema]) -> Schema:
    op: Operation = route.operation
    safe = route.method in _SAFE_METHODS
    errors = set(op.errors)
    if op.body is not None or op.params:
        errors.add(400)
    if op.auth is not Auth.PUBLIC:
        errors.update(_SESSION_ERRORS)
    unknown = errors - set(_ERROR_DESCRIPTIONS)
    if unknown:
        raise ValueError(f"{op.operation_id}: no description for error statuses {sorted(unknown)}")
    responses: Schema = {}
    for status, answer in sorted(op.answers.items()):
        responses[str(status)] = {"description": _SUCCESS.get(status, "OK")}
        if answer is not None:
            responses[str(status)]["content"] = {"application/json": {"schema": refs[(answer, "serialization")]}}
    for status in sorted(errors):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    document: Schema = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _security(op.auth, safe),
        "responses": responses,
    }
    if op.auth is Auth.ADMIN:
        document["description"] = "Needs an admin's session."
    parameters = [_path_parameter(name) for name in route.param_convertors] + [_parameter(p) for p in op.params]
    if parameters:
        document["parameters"] = parameters
    if op.body is not None:
        document["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    return document


def _security(auth: Auth, safe: bool) -> list[Schema]:
    if auth is Auth.PUBLIC:
        return []
    if auth is Auth.OPTIONAL_SESSION:
        return [{}, _BEARER, _COOKIE_CSRF]
    return [_BEARER, _COOKIE if safe else _COOKIE_CSRF]


def _path_parameter(name: str) -> Schema:
    what = name.removesuffix("_id").replace("_", " ")
    return {"name": name, "in": "path", "required": True, "schema": dict(UUID), "description": f"The {what}'s id"}


def _parameter(param: Param) -> Schema:
    return {
        "name": param.name,
        "in": param.location,
        "required": param.required,
        "schema": dict(param.schema),
        "description": param.description,
    }


def openapi_endpoint(routes: Sequence[BaseRoute]) -> Callable[[Request], Awaitable[Response]]:
    """`GET /openapi.json` for the app whose `/api` route table is `routes`: built on first use."""
    built: list[bytes] = []

    async def endpoint(request: Request) -> Response:
        if not built:
            built.append(orjson.dumps(openapi_document(routes)))
        return Response(built[0], media_type="application/json")

    return endpoint
