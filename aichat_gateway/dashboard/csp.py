"""Security headers for every dashboard response: a strict Content-Security-Policy (no inline
script or style, nothing from other origins but Stripe.js where Stripe is configured), no framing,
no MIME sniffing, no referrer beyond the origin.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Where a Connect account link sends the seller. Browsers apply form-action to a form's redirects
# too, so the payouts page's onboarding form (a POST answered by a 303 to the link) needs it.
STRIPE_CONNECT_ORIGIN = "https://connect.stripe.com"


def content_security_policy(stripe_js_url: str | None = None, *, connect_onboarding: bool = False) -> str:
    """Pure: the policy. Stripe.js must come from Stripe (it refuses to be self-hosted) and talks to
    its own API and frames, so its origin is allowed for scripts, frames and connections, and only
    when the gateway uses Stripe; Stripe Connect's onboarding origin may end a form's redirects only
    when the gateway has a Stripe secret key (`connect_onboarding`)."""
    extra: tuple[str, ...] = ()
    if stripe_js_url:
        parts = urlsplit(stripe_js_url)
        extra = (f"{parts.scheme}://{parts.netloc}",)

    def sources(*base: str) -> str:
        return " ".join((*base, *extra))

    directives: Iterable[tuple[str, str]] = (
        ("default-src", "'self'"),
        ("script-src", sources("'self'")),
        ("style-src", "'self'"),
        ("img-src", "'self' data:"),
        ("font-src", "'self'"),
        ("connect-src", sources("'self'")),
        ("frame-src", sources() or "'none'"),
        ("object-src", "'none'"),
        ("base-uri", "'none'"),
        ("form-action", f"'self' {STRIPE_CONNECT_ORIGIN}" if connect_onboarding else "'self'"),
        ("frame-ancestors", "'none'"),
    )
    return "; ".join(f"{name} {value}" for name, value in directives)


class SecurityHeaders:
    """Adds the headers to each HTTP response of the wrapped app (pages, static files, errors)."""

    def __init__(self, app: ASGIApp, policy: str) -> None:
        self.app = app
        self.headers: list[tuple[bytes, bytes]] = [
            (b"content-security-policy", policy.encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)
