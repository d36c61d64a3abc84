"""Offers on a running site's market, made the way a seller makes them: register, log in, and
POST /api/marketplace/listings with explicit prices on the site's fake provider."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx

from tests.support.browser import PASSWORD, Site, new_email

SELLER_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class SeededListing:
    seller_email: str
    listing_id: str
    offer_id: str  # the listing's public id: what the market shows
    input_usd_per_million: str
    output_usd_per_million: str


def seller_token(site: Site, email: str | None = None) -> tuple[str, str]:
    """A new seller account: (e-mail, bearer token)."""
    email = email or new_email("seller")
    registered = httpx.post(site.at("/api/auth/register"), json={"email": email, "password": PASSWORD}, timeout=10)
    assert registered.status_code == 201, registered.text
    login = httpx.post(site.at("/api/auth/login"), json={"email": email, "password": PASSWORD}, timeout=10)
    assert login.status_code == 200, login.text
    return email, str(login.json()["access_token"])


def seller_with_listing(
    site: Site,
    input_usd: str,
    output_usd: str,
    *,
    models: tuple[str, ...] = (SELLER_MODEL,),
    name: str = "market endpoint",
) -> SeededListing:
    """A new seller with one active listing of `models` at these prices (USD per million tokens)."""
    email, token = seller_token(site)
    answer = httpx.post(
        site.at("/api/marketplace/listings"),
        json={
            "name": name,
            "provider": "openai",
            "base_url": site.fake_upstream_url,
            "api_key": "sk-seed-" + secrets.token_hex(12),
            "models": [{"model": m} for m in models],
            "pricing": {"input_usd_per_million": input_usd, "output_usd_per_million": output_usd},
            "attest_resale": True,
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return SeededListing(email, body["id"], body["public_id"], input_usd, output_usd)


async def seller_with_listing_in_app(
    client: httpx.AsyncClient, input_usd: str, output_usd: str, *, models: tuple[str, ...]
) -> SeededListing:
    """The same through an app in this process (the ASGI `client` fixture); the app's key check
    must accept any key (tests replace it: there is no provider behind these listings)."""
    email = new_email("seller")
    registered = await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    answer = await client.post(
        "/api/marketplace/listings",
        json={
            "name": "market endpoint",
            "provider": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "api_key": "sk-seed-" + secrets.token_hex(12),
            "models": [{"model": m} for m in models],
            "pricing": {"input_usd_per_million": input_usd, "output_usd_per_million": output_usd},
            "attest_resale": True,
        },
        headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return SeededListing(email, body["id"], body["public_id"], input_usd, output_usd)


def unique_model(tag: str = "market") -> str:
    """A model outside the catalog that no other test's listing serves (sold at explicit prices)."""
    return f"{tag}-{secrets.token_hex(5)}"
