"""The admin's account routes and everyone's audit trail, mounted under `/api`.

- `GET /admin/users?query=`: accounts whose e-mail contains the query; `PATCH /admin/users/{id}`:
  role and disabled (useradmin.py decides; the dashboard's admin page calls the same functions).
- `GET /audit/events`: the caller's own events, newest first; an admin may ask for everyone's
  (`all=1`). `action` narrows to a kind (`login.`, `admin.`), `before_id` pages back.

Another user's events are never reachable by a non-admin: the query is scoped to the caller, and
`all=1` from a non-admin is 403 rather than silently the caller's own (a client must not believe
it saw everything).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response

from aichat_gateway import audittrail, queryparams
from aichat_gateway.accounts import useradmin
from aichat_gateway.accounts.api import client_ip, deps, json_response
from aichat_gateway.accounts.backend import require_admin, require_user
from aichat_gateway.accounts.bodies import read_body
from aichat_gateway.accounts.errors import Forbidden, InvalidInput
from aichat_gateway.accounts.schemas import AccountEventPage, AdminUser, AdminUserList, AdminUserPatch
from aichat_gateway.apiroute import STRING, ApiRoute, Auth, api_route, query

EVENTS_PAGE: Final = 50
_ACTION_PREFIX = re.compile(r"^[a-z_]{1,40}(\.[a-z_]{0,40})?$")
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"", "0", "false", "no"})


@dataclass(frozen=True, slots=True)
class EventQuery:
    everyone: bool = False
    action_prefix: str | None = None
    before_id: int | None = None
    limit: int = EVENTS_PAGE


def event_query(params: Mapping[str, str], *, is_admin: bool) -> EventQuery:
    """Pure: the audit trail's query parameters (`all`, `action`, `before_id`, `limit`), checked."""
    everyone_text = params.get("all", "").strip().lower()
    if everyone_text not in _TRUE | _FALSE:
        raise InvalidInput("all must be 1 or 0", param="all")
    everyone = everyone_text in _TRUE
    if everyone and not is_admin:
        raise Forbidden("only an admin may see everyone's events", param="all")
    action = params.get("action", "").strip() or None
    if action is not None and not _ACTION_PREFIX.match(action):
        raise InvalidInput("action must be an action or its start, such as login. or admin.credit", param="action")
    before_id = None
    if params.get("before_id"):
        before_id = queryparams.whole_number(params["before_id"], 1, 2**63 - 1)
        if before_id is None:
            raise InvalidInput("before_id must be an event id (the previous page's next_before_id)", param="before_id")
    return EventQuery(
        everyone=everyone,
        action_prefix=action,
        before_id=before_id,
        limit=queryparams.page_limit(params, InvalidInput, default=EVENTS_PAGE, maximum=audittrail.MAX_PAGE),
    )


def event_json(event: audittrail.Event) -> dict[str, Any]:
    return {**event.public(), "label": event.label}


async def event_page(
    db: audittrail.Executor, subject_id: str, asked: EventQuery
) -> tuple[list[audittrail.Event], int | None]:
    """One page of events and the `before_id` of the next (None on the last page)."""
    limit = min(asked.limit, audittrail.MAX_PAGE)
    found = await audittrail.events(
        db,
        subject_id=subject_id,
        everyone=asked.everyone,
        before_id=asked.before_id,
        action_prefix=asked.action_prefix,
        limit=limit + 1,
    )
    page = found[:limit]
    return page, (page[-1].id if len(found) > limit else None)


class AdminApi:
    async def list_users(self, request: Request) -> Response:
        require_admin(request)
        found = await useradmin.search(deps(request).db, request.query_params.get("query", ""))
        return json_response({"data": [a.public() for a in found]})

    async def change_user(self, request: Request) -> Response:
        admin = require_admin(request)
        body = await read_body(request, AdminUserPatch)
        asked = useradmin.Change(role=body.role, disabled=body.disabled)
        account = await useradmin.change_and_announce(
            deps(request), admin.id, request.path_params["user_id"], asked, ip=client_ip(request)
        )
        return json_response(account.public())

    async def list_events(self, request: Request) -> Response:
        user = require_user(request)
        asked = event_query(request.query_params, is_admin=user.is_admin)
        page, next_before = await event_page(deps(request).db, user.id, asked)
        return json_response(
            {"data": [event_json(e) for e in page], "next_before_id": str(next_before) if next_before else None}
        )


def routes() -> list[ApiRoute]:
    api = AdminApi()
    return [
        api_route(
            "GET",
            "/admin/users",
            api.list_users,
            operation_id="listUsers",
            summary="Admin: accounts whose e-mail contains `query` (all for none), those starting with it first",
            tag="admin",
            params=(query("query", STRING, "Part of the e-mail (case-insensitive)"),),
            answers={200: AdminUserList},
            auth=Auth.ADMIN,
        ),
        api_route(
            "PATCH",
            "/admin/users/{user_id}",
            api.change_user,
            operation_id="changeUser",
            summary="Admin: change an account's role, or disable it (its sessions end and its keys stop "
            "working) or enable it; not one's own",
            tag="admin",
            body=AdminUserPatch,
            answers={200: AdminUser},
            auth=Auth.ADMIN,
            errors=(404,),
        ),
        api_route(
            "GET",
            "/audit/events",
            api.list_events,
            operation_id="listAccountEvents",
            summary="The caller's account events (logins, keys, listings, money, admin actions), newest first; "
            "admins: all=1 for everyone's",
            tag="accounts",
            params=(
                query("all", {"type": "string", "enum": ["0", "1"]}, "Admins: everyone's events"),
                query("action", STRING, "Only actions starting with this (login., admin.credit)"),
                query("before_id", STRING, "Events older than this id (the previous page's next_before_id)"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": audittrail.MAX_PAGE}, "Page size"),
            ),
            answers={200: AccountEventPage},
            auth=Auth.SESSION,
        ),
    ]
