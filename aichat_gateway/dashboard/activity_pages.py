"""The audit trail as a page (`/app/activity`): what happened to one's account, when, by whom, from where.

Everyone sees their own events; an admin may switch to everyone's and narrow to a kind of action.
The same query and rules as `GET /api/audit/events` (accounts/admin_api.py: `event_query`,
`event_page`), paged back with "Older events" (`before_id`).
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway import audittrail
from aichat_gateway.accounts.admin_api import event_page, event_query
from aichat_gateway.accounts.errors import Forbidden, InvalidInput
from aichat_gateway.dashboard.forms import Form
from aichat_gateway.dashboard.pages import page_user
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import Templates

# The kinds an admin can narrow to (action prefixes), as the filter's options.
KINDS: Final = (
    ("", "Every kind"),
    ("login.", "Logins"),
    ("session.", "Logouts"),
    ("password.", "Password changes"),
    ("key.", "API keys"),
    ("listing.", "Listings"),
    ("topup.", "Funds added"),
    ("payout.", "Payouts"),
    ("admin.", "Admin actions"),
)


def older_link(params: dict[str, str], next_before_id: int | None) -> str | None:
    """Pure: the address of the next (older) page, keeping the filters; None on the last page."""
    if next_before_id is None:
        return None
    kept = {k: v for k, v in params.items() if k in ("all", "action") and v}
    return "/app/activity?" + urlencode({**kept, "before_id": str(next_before_id)})


class ActivityPages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    async def activity(self, request: Request) -> Response:
        user = await page_user(request)
        params = {k: request.query_params.get(k, "") for k in ("all", "action", "before_id")}
        form = Form(values=dict(params))
        events: list[audittrail.Event] = []
        older = None
        status = 200
        try:
            asked = event_query(params, is_admin=user.is_admin)
        except (InvalidInput, Forbidden) as exc:
            form.refuse(exc.message, exc.param)
            status = 400
        else:
            events, next_before = await event_page(services(request).db, user.id, asked)
            older = older_link(params, next_before)
        context = {
            "events": events,
            "older": older,
            "form": form,
            "kinds": KINDS,
            "everyone": params["all"] == "1" and user.is_admin,
            "paged": bool(params["before_id"]),
        }
        return self.templates.render(request, "activity.html", context, user=user, status_code=status)

    def routes(self) -> list[Route]:
        return [Route("/app/activity", self.activity, methods=["GET"])]
