"""What the attack tests (tests/security) share: accounts, keys and listings made over the public
API, a fake provider, and assertions."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette

from aichat_gateway.accounts import sessions
from aichat_gateway.accounts.tokens import SessionTokens
from aichat_gateway.billing.credits import grant_credit

PASSWORD = "attack-suite-" + secrets.token_hex(8)
# Every table the migrations create: an injection that dropped one would show here.
TABLES = (
    "users",
    "api_keys",
    "listings",
    "listing_models",
    "ledger_accounts",
    "ledger_entries",
    "transfers",
    "usage_records",
    "topups",
    "stripe_events",
    "stripe_customers",
    "payouts",
    "seller_payout_accounts",
    "sessions",
)
INJECTIONS = (
    "' OR 1=1 --",
    '"; DROP TABLE users; --',
    "'; DROP TABLE api_keys; --",
    "1' UNION SELECT email, password_hash FROM users --",
    "\x00",
    "abc\x00def",
    "\u2019 OR \u20191\u2019=\u20191",  # unicode quotes some layers fold into ASCII
    "\uff07 OR 1=1 --",  # fullwidth apostrophe
    "%27%20OR%201%3D1",
    "../../etc/passwd",
    "$1",
    "\\",
    "x" * 5 * 1024,
)


def unique_email(tag: str = "attack") -> str:
    return f"{tag}-{uuid.uuid4().hex[:12]}@example.com"


class Clock:
    """The app's wall clock: real time plus `offset` seconds a test may move (and must put back)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass(frozen=True)
class Account:
    id: str
    email: str
    token: str
    role: str = "user"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def listing_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "attack suite endpoint",
        "provider": "openai",
        "base_url": "http://127.0.0.1:9/v1",
        "api_key": "sk-provider-" + secrets.token_hex(12),
        "models": [{"model": "gpt-4o-mini"}],
        "pricing": {"multiplier": "1"},
        "attest_resale": True,
    }
    body.update(overrides)
    return body


class Gateway:
    """The in-process app and a client for it, with the steps every attack starts from."""

    def __init__(self, app: Starlette, client: httpx.AsyncClient, password_hash: str) -> None:
        self.app = app
        self.client = client
        self.password_hash = password_hash  # of PASSWORD, made once: argon2 costs ~0.2 s a time

    async def user(self, tag: str = "attack", role: str = "user") -> Account:
        """A user stored directly, with a session as login would give it: fast, for attacks that
        start after login. Logging in with PASSWORD works too."""
        email = unique_email(tag)
        user_id = await self.app.state.services.db.fetchval(
            "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3) RETURNING id",
            email,
            self.password_hash,
            role,
        )
        return Account(str(user_id), email, await self.session_token(str(user_id), role), role)

    async def session_token(self, user_id: str, role: str = "user") -> str:
        """A new session of the user, as login makes it: a token and its server-side session row."""
        issued = SessionTokens.from_settings(self.app.state.settings).issue(user_id, role)
        await sessions.start(self.app.state.services.db, issued.claims)
        return issued.token

    async def admin(self) -> Account:
        return await self.user("admin", role="admin")

    async def sign_up(self, tag: str = "attack") -> Account:
        """A new user through the API (register, then log in with a bearer token; no cookies kept)."""
        email = unique_email(tag)
        created = await self.client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
        assert created.status_code == 201, created.text
        return await self.log_in(email, created.json()["id"])

    async def log_in(self, email: str, user_id: str, role: str = "user") -> Account:
        answer = await self.client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        self.client.cookies.clear()
        return Account(user_id, email, answer.json()["access_token"], role)

    async def create_key(self, owner: Account, name: str = "attack") -> dict[str, Any]:
        answer = await self.client.post("/api/keys", json={"name": name}, headers=owner.auth)
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    async def create_listing(self, seller: Account, **overrides: Any) -> dict[str, Any]:
        answer = await self.client.post(
            "/api/marketplace/listings", json=listing_body(**overrides), headers=seller.auth
        )
        assert answer.status_code == 201, answer.text
        created: dict[str, Any] = answer.json()
        return created

    async def routable_model(self, base_url: str = "http://127.0.0.1:9/v1") -> str:
        """A model only one (new) listing serves, on `base_url`; the app's snapshot has it at once."""
        model = f"attack-model-{uuid.uuid4().hex[:8]}"
        await self.create_listing(
            await self.user("seller"),
            base_url=base_url,
            models=[{"model": model, "upstream_model": "gpt-4o-mini"}],
            pricing={"input_usd_per_million": "1", "output_usd_per_million": "2"},
        )
        await self.app.state.services.listings.refresh()
        return model

    async def funded_key(self, usd: int = 5) -> tuple[Account, str]:
        """A buyer with `usd` of promotional credit and a gateway key: (buyer, key secret)."""
        buyer = await self.user("buyer")
        await grant_credit(
            self.app.state.services.db,
            user_id=buyer.id,
            amount_micro=usd * 1_000_000,
            reason="attack suite",
            granted_by=None,
            idempotency_key=None,
            on_balance_change=self.app.state.services.hot.credit,
        )
        return buyer, (await self.create_key(buyer))["key"]


class Counted:
    """A request body sent in chunks, counting how many the server pulled."""

    def __init__(self, chunk: bytes, chunks: int) -> None:
        self.chunk, self.chunks, self.pulled = chunk, chunks, 0

    async def stream(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield self.chunk


class Body(httpx.AsyncByteStream):
    """An unread body: the hot path streams what providers send (a plain `content=` arrives read)."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.content


class Provider:
    """Stands in for every provider (an httpx transport under the app's upstream client): records
    what the hot path sends and answers like an OpenAI provider, or with `status` and `headers`."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []
        self.status = 200
        self.headers: dict[str, str] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if self.status != 200:
            return httpx.Response(self.status, headers=self.headers, stream=Body(b""))
        answer = {
            "id": "chatcmpl-attack",
            "object": "chat.completion",
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        return httpx.Response(200, headers={"content-type": "application/json"}, stream=Body(orjson.dumps(answer)))


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    """`response` is an OpenAI-shaped error with this status (and, if given, this param)."""
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    if param is not None:
        assert error["param"] == param, error
    return error


def assert_not_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.method} {response.request.url}: {response.text[:500]}"
