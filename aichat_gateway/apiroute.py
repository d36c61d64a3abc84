"""`/api` routes declared with what the OpenAPI document says about them, next to their handlers.

`api_route(...)` returns a Starlette route (an `ApiRoute`) carrying its `Operation`: the operation
id, summary and tag, the body model, the answer model per success status, query and header
parameters, the authentication it needs and the errors it may answer besides those that follow
from the rest (400 for a body or parameters; 401, 403 and 503 for a session). server/openapi.py
builds `/openapi.json` from the routes of the running app and refuses a route declared any other
way, so no `/api` operation goes undocumented.

Query parameters are parsed by hand (queryparams.py); the shared ones are described here from the
same constants.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway.queryparams import DEFAULT_PAGE, MAX_PAGE

Schema = Mapping[str, Any]
Handler = Callable[[Request], Awaitable[Response]]


class Auth(enum.Enum):
    """Who may call: anyone, a session (bearer token, or the browser's cookie with its CSRF header
    on unsafe methods), an admin's session, or anyone with a session ended if one is presented."""

    PUBLIC = "public"
    SESSION = "session"
    ADMIN = "admin"
    OPTIONAL_SESSION = "optional_session"


@dataclass(frozen=True, slots=True)
class Param:
    """A query or header parameter (path parameters come from the route's path)."""

    name: str
    location: Literal["query", "header"]
    schema: Schema
    description: str
    required: bool = False


def query(name: str, schema: Schema, description: str) -> Param:
    return Param(name, "query", schema, description)


def header(name: str, schema: Schema, description: str, *, required: bool = False) -> Param:
    return Param(name, "header", schema, description, required)


STRING: Schema = {"type": "string"}
UUID: Schema = {"type": "string", "format": "uuid"}
LIMIT = query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}, f"Page size (default {DEFAULT_PAGE})")
CURSOR = query("cursor", STRING, "`next_cursor` of the previous page")
# queryparams.timestamp's rule.
TIME: Schema = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601: a date (UTC midnight) or a date-time with Z or +-HH:MM (none means UTC), "
    "between 1970-01-01 and 2199-12-31 UTC; anything else is 400",
}


def time_query(name: str, description: str) -> Param:
    return query(name, TIME, description)


@dataclass(frozen=True, slots=True)
class Operation:
    """What `/openapi.json` says about one route (see the module's docstring)."""

    operation_id: str
    summary: str
    tag: str
    answers: Mapping[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    body_required: bool = True
    params: tuple[Param, ...] = ()
    auth: Auth = Auth.PUBLIC
    errors: tuple[int, ...] = ()


class ApiRoute(Route):
    """A Starlette route for one method, with its `Operation`."""

    def __init__(self, path: str, endpoint: Handler, method: str, operation: Operation) -> None:
        super().__init__(path, endpoint, methods=[method])
        self.method = method
        self.operation = operation


def api_route(
    method: str,
    path: str,
    endpoint: Handler,
    *,
    operation_id: str,
    summary: str,
    tag: str,
    answers: Mapping[int, type[BaseModel] | None],
    body: type[BaseModel] | None = None,
    body_required: bool = True,
    params: tuple[Param, ...] = (),
    auth: Auth = Auth.PUBLIC,
    errors: tuple[int, ...] = (),
) -> ApiRoute:
    return ApiRoute(
        path,
        endpoint,
        method,
        Operation(
            operation_id=operation_id,
            summary=summary,
            tag=tag,
            answers=answers,
            body=body,
            body_required=body_required,
            params=params,
            auth=auth,
            errors=errors,
        ),
    )
