"""The dashboard as one ASGI app, mounted by the composition root at the root path, after `/v1`,
`/api` and the operational routes (so it only sees what they do not serve).

Its middleware, outermost first: security headers (CSP), the form CSRF bridge, then the same
session backend as `/api`. Errors become pages in the theme: 404 for an unknown path, 403 for a
page of another role, 500 for a fault; a page that needs a login redirects to it and back.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from aichat_gateway.accounts.backend import SessionBackend, auth_error_response, live_session_role
from aichat_gateway.config.settings import Settings
from aichat_gateway.dashboard.activity_pages import ActivityPages
from aichat_gateway.dashboard.admin_money import AdminMoneyPages
from aichat_gateway.dashboard.admin_pages import AdminPages
from aichat_gateway.dashboard.auth_pages import AuthPages
from aichat_gateway.dashboard.billing_pages import BillingPages
from aichat_gateway.dashboard.csp import SecurityHeaders, content_security_policy
from aichat_gateway.dashboard.formcsrf import FormCsrf
from aichat_gateway.dashboard.home import HomePages
from aichat_gateway.dashboard.keys_pages import KeysPages
from aichat_gateway.dashboard.market import MarketPages
from aichat_gateway.dashboard.pages import LoginRequired, PageForbidden, login_redirect, session_user
from aichat_gateway.dashboard.seller_pages import SellerPages
from aichat_gateway.dashboard.statement_pages import StatementPages
from aichat_gateway.dashboard.templating import STATIC_DIR, Templates

_ERROR_TITLES = {
    403: ("Forbidden", "This page is not available to your account."),
    404: ("Not found", "There is nothing at this address."),
    405: ("Not allowed", "This address does not take that kind of request."),
    500: ("Something went wrong", "The error has been logged. Try again in a moment."),
}


class VersionedStatic(StaticFiles):
    """Static files; a URL carrying the file's hash (`?v=`, templating.static_url) never changes,
    so browsers keep it for a year."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            versioned = b"v=" in scope.get("query_string", b"")
            response.headers["cache-control"] = "public, max-age=31536000, immutable" if versioned else "no-cache"
        return response


def page_routes(templates: Templates) -> list[BaseRoute]:
    return [
        *AuthPages(templates).routes(),
        *HomePages(templates).routes(),
        *MarketPages(templates).routes(),
        *KeysPages(templates).routes(),
        *SellerPages(templates).routes(),
        *BillingPages(templates).routes(),
        *StatementPages(templates).routes(),
        *AdminPages(templates).routes(),
        *AdminMoneyPages(templates).routes(),
        *ActivityPages(templates).routes(),
        Mount("/static", app=VersionedStatic(directory=STATIC_DIR), name="static"),
    ]


def build_site(settings: Settings) -> Starlette:
    templates = Templates()
    stripe_js = settings.stripe_js_url if settings.stripe_publishable_key else None

    def error_page(request: Request, status: int) -> Response:
        title, text = _ERROR_TITLES.get(status, _ERROR_TITLES[500])
        user = session_user(request)
        return templates.render(
            request,
            "errors/error.html",
            {"status": status, "title": title, "text": text, "signed_in": user is not None},
            status_code=status,
        )

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_page(request, exc.status_code if exc.status_code in _ERROR_TITLES else 500)

    async def on_login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        return login_redirect(exc.next_path, request)

    async def on_forbidden(request: Request, exc: Exception) -> Response:
        return error_page(request, 403)

    async def on_fault(request: Request, exc: Exception) -> Response:
        # Starlette re-raises the fault after this page is sent; the edge (proxy/edge.py) logs it
        # once, with the request id and the traceback.
        return error_page(request, 500)

    return Starlette(
        routes=page_routes(templates),
        middleware=[
            Middleware(
                SecurityHeaders,
                policy=content_security_policy(stripe_js, connect_onboarding=settings.stripe_secret_key is not None),
            ),
            Middleware(FormCsrf),
            Middleware(
                AuthenticationMiddleware,
                backend=SessionBackend(settings, session_of=live_session_role),
                on_error=auth_error_response,
            ),
        ],
        exception_handlers={
            HTTPException: on_http_error,
            LoginRequired: on_login_required,
            PageForbidden: on_forbidden,
            Exception: on_fault,
        },
    )
