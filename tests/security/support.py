"""What the attack tests share: accounts, keys and listings made over the public API, and assertions.

Kept out of conftest.py so test modules can import it by a stable name: every conftest of this
suite is imported as the module `conftest`, and which one that is depends on collection order.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.applications import Starlette

from aichat_gateway.accounts.tokens import SessionTokens

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
        """A user stored directly, with the session token login would give: fast, for attacks that
        start after login. Logging in with PASSWORD works too."""
        email = unique_email(tag)
        user_id = await self.app.state.db.fetchval(
            "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3) RETURNING id",
            email,
            self.password_hash,
            role,
        )
        token = SessionTokens.from_settings(self.app.state.settings).issue(str(user_id), role).token
        return Account(str(user_id), email, token, role)

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
