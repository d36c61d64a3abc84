"""Log in, register, log out: the pages in front of the console.

The same functions as `/api/auth/*` (accounts/login.py, users.create_user), so failures count
against the same login limit, sessions are the same server-side rows, and a page refuses what the
API refuses in the same words, shown next to the field.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway.accounts import users
from aichat_gateway.accounts.api import clear_session_cookies, client_ip, set_session_cookies
from aichat_gateway.accounts.errors import (
    AccountDisabled,
    AccountsError,
    EmailTaken,
    InvalidCredentials,
    InvalidInput,
    TooManyAttempts,
)
from aichat_gateway.accounts.login import LoggedIn, log_in, log_out
from aichat_gateway.accounts.passwords import MIN_PASSWORD_CHARS, Passwords
from aichat_gateway.accounts.schemas import Credentials, Registration
from aichat_gateway.dashboard.forms import Form, read_form, validate
from aichat_gateway.dashboard.pages import redirect, safe_next, session_user
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import Templates


class AuthPages:
    def __init__(self, templates: Templates, passwords: Passwords | None = None) -> None:
        self.templates = templates
        self.passwords = passwords or Passwords()

    async def root(self, request: Request) -> Response:
        return redirect("/app" if session_user(request) else "/login")

    async def login_page(self, request: Request) -> Response:
        if session_user(request) is not None:
            return redirect(safe_next(request.query_params.get("next")))
        return self._login(request, Form(values={"next": request.query_params.get("next", "")}))

    async def login(self, request: Request) -> Response:
        form = await read_form(request, ("email", "password", "next"))
        body = validate(form, Credentials, {"email": form.values["email"], "password": form.values["password"]})
        if body is None:
            return self._login(request, form, status_code=400)
        try:
            done = await self._log_in(request, body.email, body.password)
        except TooManyAttempts as exc:
            form.refuse(f"Too many attempts. Try again in {exc.retry_after} seconds.")
            return self._login(request, form, status_code=429)
        except AccountDisabled:
            form.refuse("This account is disabled by an administrator. Contact support to have it enabled.")
            return self._login(request, form, status_code=403)
        except InvalidCredentials:
            form.refuse("Wrong e-mail or password.")
            return self._login(request, form, status_code=401)
        except InvalidInput as exc:
            form.refuse(exc.message, exc.param)
            return self._login(request, form, status_code=400)
        response = redirect(safe_next(form.values["next"]))
        set_session_cookies(response, done.issued, services(request).settings)
        return response

    async def register_page(self, request: Request) -> Response:
        if session_user(request) is not None:
            return redirect("/app")
        return self._register(request, Form())

    async def register(self, request: Request) -> Response:
        form = await read_form(request, ("email", "password"))
        body = validate(form, Registration)
        if body is None:
            return self._register(request, form, status_code=400)
        svc = services(request)
        try:
            await users.create_user(svc.db, self.passwords, body.email, body.password)
        except EmailTaken as exc:
            form.refuse(exc.message, "email")
            return self._register(request, form, status_code=409)
        except InvalidInput as exc:
            form.refuse(exc.message, exc.param)
            return self._register(request, form, status_code=400)
        try:
            done = await self._log_in(request, body.email, body.password)
        except AccountsError:  # the account exists; logging in is the user's next step
            return redirect("/login")
        response = redirect("/app")
        set_session_cookies(response, done.issued, svc.settings)
        return response

    async def logout(self, request: Request) -> Response:
        user = session_user(request)
        svc = services(request)
        if user is not None:
            await log_out(svc, user)
        response = redirect("/login")
        clear_session_cookies(response, svc.settings)
        return response

    async def _log_in(self, request: Request, email: str, password: str) -> LoggedIn:
        return await log_in(
            services(request),
            self.passwords,
            email,
            password,
            ip=client_ip(request),
            user_agent=request.headers.get("user-agent"),
        )

    def _login(self, request: Request, form: Form, status_code: int = 200) -> Response:
        return self.templates.render(request, "auth/login.html", {"form": form}, status_code=status_code)

    def _register(self, request: Request, form: Form, status_code: int = 200) -> Response:
        context = {"form": form, "min_password": MIN_PASSWORD_CHARS}
        return self.templates.render(request, "auth/register.html", context, status_code=status_code)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.root, methods=["GET"]),
            Route("/login", self.login_page, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/register", self.register_page, methods=["GET"]),
            Route("/register", self.register, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
        ]
