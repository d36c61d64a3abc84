"""A working marketplace on the e2e site, for browser tests that call `/v1` (reusable by any area).

The e2e `site` starts with no listing, so `/v1/chat/completions` answers an OpenAI error. These
helpers seed it through the site's own HTTP API, as people would:

    offer = list_fake_upstream(site)          # a new seller lists the suite's fake upstream (gpt-4o-mini)
    fund_account(site, email, "5")            # promotional credit for an account, as an admin grants it
    wait_until_served(site, key, offer.model) # the gateway routes the model (listings reach it by pub/sub)

`list_fake_upstream` makes a new seller and listing on every call (call it from a session- or
module-scoped fixture); `seller_with_listing` lists it at explicit prices (the market's sorting
tests). Funding goes through billing's own `grant_credit` (tests/support/market.py
`fund`): Postgres first, then the hot balance, exactly as `POST /api/admin/credits` does.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx

from tests.support.browser import PASSWORD, Site, new_email
from tests.support.market import fund
from tests.support.waiting import wait_until

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


FAKE_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class Offer:
    seller_email: str
    listing_id: str
    model: str


def api_login(site: Site, email: str, password: str = PASSWORD) -> dict[str, str]:
    """A bearer header for `/api` as this account (a new session of its own)."""
    answer = httpx.post(site.at("/api/auth/login"), json={"email": email, "password": password}, timeout=10)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def list_fake_upstream(site: Site, model: str = FAKE_MODEL) -> Offer:
    """A new seller lists the site's fake upstream for `model` at list price (multiplier 1)."""
    email = new_email("seller")
    registered = httpx.post(site.at("/api/auth/register"), json={"email": email, "password": PASSWORD}, timeout=10)
    assert registered.status_code == 201, registered.text
    body = {
        "name": f"e2e fake upstream {secrets.token_hex(3)}",
        "provider": "openai",
        "base_url": site.fake_upstream_url,
        "api_key": "sk-e2e-" + secrets.token_hex(16),
        "models": [{"model": model}],
        "pricing": {"multiplier": "1"},
        "attest_resale": True,
    }
    created = httpx.post(site.at("/api/marketplace/listings"), json=body, headers=api_login(site, email), timeout=10)
    assert created.status_code == 201, created.text
    return Offer(seller_email=email, listing_id=created.json()["id"], model=model)


def fund_account(site: Site, email: str, amount_usd: str, password: str = PASSWORD) -> None:
    """Credit `amount_usd` to the account with this e-mail (registered with `password`)."""
    me = httpx.get(site.at("/api/auth/me"), headers=api_login(site, email, password), timeout=10)
    assert me.status_code == 200, me.text
    fund(site.settings, me.json()["id"], amount_usd)


def wait_until_served(site: Site, key: str, model: str = FAKE_MODEL, within: float = 10.0) -> None:
    """Poll `/v1/models` with `key` until the gateway offers `model`."""

    def served() -> bool:
        answer = httpx.get(site.at("/v1/models"), headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert answer.status_code == 200, answer.text
        return model in {m["id"] for m in answer.json()["data"]}

    wait_until(served, within, f"{model} on the e2e site", interval=0.05)
