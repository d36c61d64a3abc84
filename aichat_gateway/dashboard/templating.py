"""Rendering pages: one Jinja2 environment per app, the navigation, and cache-busted static URLs.

Templates get `user` (a PageUser or None), `csrf_token` (for the hidden field of every form),
`nav` (the entries this user may see, the current one marked), `static(path)` (a URL with the
file's hash, served as immutable) and whatever the page passes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from aichat_gateway.accounts.backend import CSRF_COOKIE

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
TEMPLATE_DIR = HERE / "templates"


@dataclass(frozen=True, slots=True)
class PageUser:
    id: str
    email: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class NavEntry:
    path: str
    label: str
    admin_only: bool = False


# The console's sections, in the order of the navigation bar.
NAV: tuple[NavEntry, ...] = (
    NavEntry("/app", "Overview"),
    NavEntry("/app/keys", "Keys"),
    NavEntry("/app/billing", "Billing"),
    NavEntry("/app/market", "Market"),
    NavEntry("/app/seller", "Seller"),
    NavEntry("/app/activity", "Activity"),
    NavEntry("/app/admin", "Admin", admin_only=True),
)


def nav_for(user: PageUser | None, current: str) -> list[dict[str, Any]]:
    """Pure: the entries `user` may see; `current` is the one whose section holds the path."""
    if user is None:
        return []
    shown = [e for e in NAV if user.is_admin or not e.admin_only]
    best = max((e.path for e in shown if current == e.path or current.startswith(e.path + "/")), key=len, default=None)
    return [{"path": e.path, "label": e.label, "current": e.path == best} for e in shown]


def dollars(value: str) -> str:
    """Pure: a decimal USD string for reading: cents always, more digits only where they say
    something ("10.000000" -> "10.00", "0.001230" -> "0.00123", "-1.5" -> "-1.50")."""
    whole, _, fraction = value.partition(".")
    fraction = fraction.rstrip("0")
    return f"{whole}.{fraction.ljust(2, '0')}"


class Templates:
    def __init__(self) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._hashes: dict[str, str] = {}
        self.env.globals["static"] = self.static_url
        self.env.filters["dollars"] = dollars

    def static_url(self, path: str) -> str:
        digest = self._hashes.get(path)
        if digest is None:
            digest = hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest()[:12]
            self._hashes[path] = digest
        return f"/static/{path}?v={digest}"

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any] | None = None,
        *,
        user: PageUser | None = None,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        values: dict[str, Any] = {
            "request": request,
            "user": user,
            "csrf_token": request.cookies.get(CSRF_COOKIE, ""),
            "nav": nav_for(user, request.url.path),
            "path": request.url.path,
        }
        values.update(context or {})
        html = self.env.get_template(name).render(values)
        response = HTMLResponse(html, status_code=status_code, headers=headers)
        response.headers["cache-control"] = "no-store"
        return response
