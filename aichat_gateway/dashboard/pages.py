"""Who is looking at a page, and where to send them.

`page_user` is every signed-in page's first line: the session (the same backend as `/api`) and the
user's e-mail and current role from Postgres. Without a live session it raises LoginRequired,
which the site turns into a redirect to `/login?next=<this page>` (for htmx, an `HX-Redirect`),
so an expired session goes to login and back.
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import RedirectResponse, Response

from aichat_gateway.accounts import users
from aichat_gateway.accounts.backend import SessionUser
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import PageUser


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageForbidden(Exception):
    """Signed in, but this page is not for this role (rendered as the 403 page)."""


def session_user(conn: HTTPConnection) -> SessionUser | None:
    user = conn.scope.get("user")
    return user if isinstance(user, SessionUser) else None


async def page_user(request: Request) -> PageUser:
    session = session_user(request)
    if session is None:
        raise LoginRequired(_here(request))
    found = await users.get_by_id(services(request).db, session.id)
    if found is None:
        raise LoginRequired(_here(request))
    return PageUser(id=found.id, email=found.email, role=session.role)


async def admin_user(request: Request) -> PageUser:
    user = await page_user(request)
    if not user.is_admin:
        raise PageForbidden()
    return user


def safe_next(value: str | None, default: str = "/app") -> str:
    """Pure: a local path to go back to after login, never another site (`//evil`, `https://…`,
    a backslash trick) and never a non-page."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not parts.path.startswith("/app"):
        return default
    return value


def redirect(path: str, request: Request | None = None) -> Response:
    """303 to `path` (after a POST the browser GETs it); an htmx request gets `HX-Redirect`."""
    if request is not None and request.headers.get("hx-request") == "true":
        return Response(status_code=204, headers={"hx-redirect": path})
    return RedirectResponse(path, status_code=303)


def login_redirect(next_path: str, request: Request) -> Response:
    return redirect(f"/login?next={quote(next_path, safe='/')}", request)


def _here(request: Request) -> str:
    path = request.url.path
    if request.method != "GET":
        return path
    return path + (f"?{request.url.query}" if request.url.query else "")
