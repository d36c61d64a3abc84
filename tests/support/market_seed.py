"""A working marketplace on the e2e site, for browser tests that call `/v1` (reusable by any area).

The e2e `site` starts with no listing, so `/v1/chat/completions` answers an OpenAI error. These
helpers seed it through the site's own HTTP API, as people would:

    offer = list_fake_upstream(site)          # a new seller lists the suite's fake upstream (gpt-4o-mini)
    fund_account(site, email, "5")            # promotional credit for an account, as an admin grants it
    wait_until_served(site, key, offer.model) # the gateway routes the model (listings reach it by pub/sub)

`list_fake_upstream` makes a new seller and listing on every call (call it from a session- or
module-scoped fixture). Funding goes through billing's own `grant_credit` (tests/support/market.py
`fund`): Postgres first, then the hot balance, exactly as `POST /api/admin/credits` does.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx

from tests.support.browser import PASSWORD, Site, new_email
from tests.support.market import fund
from tests.support.waiting import wait_until

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
