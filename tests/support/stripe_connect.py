"""A fake of Stripe's Connect onboarding endpoints (POST /v1/accounts, POST /v1/account_links),
served through respx at the gateway's STRIPE_API_BASE: localstripe has neither.

It speaks Stripe's format: form-encoded requests (`capabilities[transfers][requested]=true`), JSON
answers shaped like Stripe's account and account_link objects, Stripe's error body for an unknown
account, and Stripe's idempotency (a repeated Idempotency-Key answers the first account again).
Every request is kept, so a test can see what went over the wire.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import httpx
import orjson
import respx


def _json(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body), headers={"content-type": "application/json"})


@dataclass
class FakeConnect:
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> the form it was created with
    by_idempotency_key: dict[str, str] = field(default_factory=dict)
    links: list[dict[str, str]] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    # When set, account creation is refused with this message (as when Connect is not enabled).
    refusal: str | None = None
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def create_account(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.refusal is not None:
            return _json(400, {"error": {"type": "invalid_request_error", "message": self.refusal}})
        form = dict(parse_qsl(request.content.decode()))
        key = request.headers.get("idempotency-key", "")
        if key in self.by_idempotency_key:
            return self._account(self.by_idempotency_key[key])
        account = f"acct_1Fake{next(self._ids):08d}Connect"
        self.accounts[account] = form
        self.by_idempotency_key[key] = account
        return self._account(account)

    def _account(self, account: str) -> httpx.Response:
        form = self.accounts[account]
        return _json(
            200,
            {
                "id": account,
                "object": "account",
                "type": form.get("type"),
                "email": form.get("email"),
                "charges_enabled": False,
                "payouts_enabled": False,
                "details_submitted": False,
                "capabilities": {"transfers": "inactive"},
                "metadata": {k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")},
            },
        )

    def create_link(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        form = dict(parse_qsl(request.content.decode()))
        account = form.get("account", "")
        if account not in self.accounts:
            return _json(
                400,
                {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "account_invalid",
                        "message": f"The provided key does not have access to account '{account}'.",
                        "param": "account",
                    }
                },
            )
        self.links.append(form)
        return _json(
            200,
            {
                "object": "account_link",
                "created": int(time.time()),
                "expires_at": int(time.time()) + 300,
                "url": f"https://connect.stripe.com/setup/e/{account}/link{len(self.links)}",
            },
        )

    def account_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path == "/v1/accounts"]


@contextmanager
def fake_connect(api_base: str, fake: FakeConnect | None = None) -> Iterator[FakeConnect]:
    """Serve the fake at `api_base` for the block. respx replaces the network transport only, so the
    ASGI client still reaches the app; a request to any other host fails the test."""
    fake = fake or FakeConnect()
    with respx.mock(base_url=api_base.rstrip("/"), assert_all_called=False) as router:
        router.post("/v1/accounts").mock(side_effect=fake.create_account)
        router.post("/v1/account_links").mock(side_effect=fake.create_link)
        yield fake
