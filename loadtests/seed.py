"""Seed a running demo gateway for the locust load test, through its REST API.

`aichat-gateway demo` makes one seller, one listing and one buyer key. The load test also needs:

- a listing with an rpm limit serving a model no other listing serves (default gpt-4.1-mini, 60 rpm),
  so that the burst persona meets 429 rate_limit_exceeded instead of failing over. It is created (or
  repointed and its limit reset) as the demo seller, on the same upstream as the demo listing.
- several buyer keys, so that users spread over keys (each key is its own cache entry and spend
  counter; they share the demo buyer's balance). Earlier runs' load-test keys are revoked first, so
  keys do not pile up.

Why the REST API and not the listings code: it goes through the same validation, key check and change
announcement as a real seller's listing, and needs nothing but the gateway's URL and the secret
(the demo passwords are derived from GATEWAY_SECRET_KEY, as `aichat-gateway demo` derives them).

    GATEWAY_SECRET_KEY=... .venv/bin/python loadtests/seed.py [--gateway-url http://127.0.0.1:8000/v1]
        [--keys 4] [--burst-model gpt-4.1-mini] [--burst-rpm 60]

Prints one JSON line: {"api_keys": [...], "burst_model", "burst_rpm", "burst_listing_id"}.
Standard library plus the gateway's own settings and demo names.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from aichat_gateway.config.settings import SettingsError, load_settings
from aichat_gateway.server.demo import BUYER_EMAIL, LISTING_NAME, SELLER_EMAIL, demo_password

BURST_LISTING_NAME = "Load test: rpm-limited fake upstream"
KEY_NAME = "loadtest"


class Api:
    """JSON over HTTP to one gateway, with an optional bearer session."""

    def __init__(self, root: str, token: str | None = None) -> None:
        self.root = root.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.root + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            raise SystemExit(f"{method} {path}: HTTP {err.code}: {err.read().decode()[:500]}") from None
        return json.loads(raw) if raw else None

    def login(self, email: str, password: str) -> Api:
        answer = self.call("POST", "/api/auth/login", {"email": email, "password": password})
        return Api(self.root, answer["access_token"])


def burst_listing(model: str, rpm: int, base_url: str) -> dict[str, Any]:
    return {
        "name": BURST_LISTING_NAME,
        "provider": "openai",
        "base_url": base_url,
        "api_key": "sk-fake-loadtest-burst",
        "models": [{"model": model}],
        "pricing": {"multiplier": "1"},
        "limits": {"rpm": rpm},
        "attest_resale": True,
    }


def ensure_burst_listing(seller: Api, model: str, rpm: int) -> str:
    """The rpm-limited listing on the demo listing's upstream, created or brought up to date; its id."""
    mine = {item["name"]: item for item in seller.call("GET", "/api/marketplace/listings")["data"]}
    demo = mine.get(LISTING_NAME)
    if demo is None:
        raise SystemExit(f"the demo listing {LISTING_NAME!r} is missing: run `aichat-gateway demo` first")
    existing = mine.get(BURST_LISTING_NAME)
    if existing is None:
        created = seller.call("POST", "/api/marketplace/listings", burst_listing(model, rpm, demo["base_url"]))
        return str(created["id"])
    served = [m["model"] for m in existing["models"]]
    if served != [model]:
        # Models cannot be changed by PATCH: replace the listing.
        seller.call("DELETE", f"/api/marketplace/listings/{existing['id']}")
        created = seller.call("POST", "/api/marketplace/listings", burst_listing(model, rpm, demo["base_url"]))
        return str(created["id"])
    changes = {"base_url": demo["base_url"], "limits": {"rpm": rpm}, "status": "active"}
    seller.call("PATCH", f"/api/marketplace/listings/{existing['id']}", changes)
    return str(existing["id"])


def fresh_keys(buyer: Api, count: int) -> list[str]:
    """Revoke the previous run's load-test keys, then create `count` new ones (secrets are shown only once)."""
    for key in buyer.call("GET", "/api/keys")["data"]:
        if key["name"] == KEY_NAME and key["revoked_at"] is None:
            buyer.call("DELETE", f"/api/keys/{key['id']}")
    return [str(buyer.call("POST", "/api/keys", {"name": KEY_NAME})["key"]) for _ in range(count)]


def wait_routable(gateway_v1: str, key: str, model: str, within: float = 15.0) -> None:
    """Until GET /v1/models lists `model`: gateway processes pick up a listing change within a second or so."""
    request = urllib.request.Request(gateway_v1.rstrip("/") + "/models", headers={"Authorization": f"Bearer {key}"})
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with urllib.request.urlopen(request, timeout=10) as response:
            if model in {m["id"] for m in json.loads(response.read())["data"]}:
                return
        time.sleep(0.2)
    raise SystemExit(f"{model} is not routable through {gateway_v1} after {within:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateway-url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8000/v1"))
    parser.add_argument("--keys", type=int, default=4, help="buyer keys to create (default 4)")
    parser.add_argument("--burst-model", default=os.environ.get("LOCUST_BURST_MODEL") or "gpt-4.1-mini")
    parser.add_argument("--burst-rpm", type=int, default=60, help="the burst listing's rpm limit (default 60)")
    args = parser.parse_args()
    if args.keys < 1 or args.burst_rpm < 1:
        parser.error("--keys and --burst-rpm must be at least 1")
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"seed: {exc}") from None
    v1 = args.gateway_url.rstrip("/")
    api = Api(v1.removesuffix("/v1"))
    seller = api.login(SELLER_EMAIL, demo_password(settings, "seller"))
    listing_id = ensure_burst_listing(seller, args.burst_model, args.burst_rpm)
    keys = fresh_keys(api.login(BUYER_EMAIL, demo_password(settings, "buyer")), args.keys)
    wait_routable(v1, keys[0], args.burst_model)
    seeded = {"api_keys": keys, "burst_model": args.burst_model, "burst_rpm": args.burst_rpm}
    print(json.dumps({**seeded, "burst_listing_id": listing_id}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
