"""CSRF for plain HTML forms, checked by the same rule as the API's.

The session backend (accounts/backend.py) wants unsafe cookie requests to carry `x-csrf-token`
equal to the CSRF cookie and signed for the session. htmx requests send that header (static/js/
app.js); a plain form cannot, so each form carries the token in a hidden `csrf_token` field and
this middleware, placed before the backend, copies it into the header. The body is read once,
capped, and replayed to the app unchanged.

It also refuses an unsafe request whose `Origin` names another site (a forged form post, including
one that would log a victim into the attacker's account): browsers send Origin on every POST.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aichat_gateway.accounts.backend import CSRF_HEADER, same_origin

FIELD = "csrf_token"
MAX_FORM_BYTES = 64 * 1024
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


def token_in_form(body: bytes) -> str | None:
    """Pure: the `csrf_token` field of an urlencoded body, if there is exactly one."""
    values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get(FIELD, [])
    return values[0] if len(values) == 1 else None


class FormCsrf:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is not None and not same_origin(
            origin.decode("latin-1"), headers.get(b"host", b"").decode("latin-1")
        ):
            await PlainTextResponse("cross-site form posts are refused", status_code=403)(scope, receive, send)
            return
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if CSRF_HEADER.encode() in headers or content_type != b"application/x-www-form-urlencoded":
            await self.app(scope, receive, send)
            return
        body = await _read(receive, MAX_FORM_BYTES)
        if body is None:
            await PlainTextResponse("form too large", status_code=413)(scope, receive, send)
            return
        token = token_in_form(body)
        if token is not None:
            scope = {**scope, "headers": [*scope["headers"], (CSRF_HEADER.encode(), token.encode("latin-1"))]}
        await self.app(scope, _replay(body, receive), send)


async def _read(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
