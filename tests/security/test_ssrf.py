"""SSRF: where can a caller make the gateway send a request? Only to a listing's validated base URL.

The app runs in production mode (GATEWAY_ALLOW_PRIVATE_UPSTREAMS off). tests/integration/
test_listing_ssrf.py refuses its UNSAFE list at listing time, a redirecting provider at key-check
time, and a name that turns private when connecting; here the same list is refused on PATCH too,
with more address spellings, and no other field (request bodies, key routing, top-ups) can point a
request anywhere. The provider is an httpx mock transport in place of the app's upstream client:
it records every request the hot path sends.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from aichat_gateway.config.settings import Settings
from tests.support.attack import Account, Gateway, Provider, assert_error, listing_body
from tests.support.ssrf import UNSAFE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

PUBLIC = "https://93.184.216.34/v1"  # a literal public address: nothing to resolve, never called
MORE_UNSAFE = [
    "https://2130706433/v1",  # 127.0.0.1 as one decimal number
    "https://0x7f000001/v1",  # ... in hex
    "https://0177.0.0.1/v1",  # ... in octal
    "https://127.1/v1",  # ... shortened
    "https://[::]/v1",
    "https://[0:0:0:0:0:ffff:7f00:1]/v1",  # IPv4-mapped loopback, long form
    "https://[::ffff:169.254.169.254]/v1",
    "https://api.openai.com@127.0.0.1/v1",  # credentials trick: the host is 127.0.0.1
    "https://user:pass@api.openai.com/v1",
    "https://93.184.216.34/v1?next=http://127.0.0.1/",
    "https://93.184.216.34/v1#@127.0.0.1",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "ftp://93.184.216.34/",
    "//127.0.0.1/v1",
    "https:/127.0.0.1/v1",
    " http://127.0.0.1/v1",
    "HTTP://127.0.0.1/v1",
    "https://127.0.0.1\\@93.184.216.34/v1",
    "https://[fe80::1%25eth0]/v1",
    "https://metadata.google.internal/computeMetadata/v1",
    "https://localhost./v1",
]


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"allow_private_upstreams": False})


async def listed(gateway: Gateway) -> tuple[Account, dict[str, Any]]:
    """A listing on PUBLIC, for a model of its own: the run's other tests share this database and
    must never be routed to an address that cannot answer."""
    seller = await gateway.user("ssrf-seller")
    models = [{"model": f"ssrf-{uuid.uuid4().hex[:8]}", "upstream_model": "gpt-4o-mini"}]
    price = {"input_usd_per_million": "1", "output_usd_per_million": "2"}
    return seller, await gateway.create_listing(seller, base_url=PUBLIC, models=models, pricing=price)


async def test_every_unsafe_base_url_is_refused_when_a_listing_is_changed(gateway: Gateway) -> None:
    seller, listing = await listed(gateway)
    path = f"/api/marketplace/listings/{listing['id']}"
    for url in [*UNSAFE, *MORE_UNSAFE]:
        # A new base_url comes with the key to use there (a stored key never goes to a new URL).
        body = {"base_url": url, "api_key": "sk-" + uuid.uuid4().hex}
        answer = await gateway.client.patch(path, json=body, headers=seller.auth)
        error = assert_error(answer, 400)
        assert error["param"] == "base_url", (url, error)
    shown = (await gateway.client.get(path, headers=seller.auth)).json()
    assert shown["base_url"] == PUBLIC


@pytest.mark.parametrize("url", MORE_UNSAFE)
async def test_an_unsafe_spelling_of_an_address_is_refused_at_listing_time(gateway: Gateway, url: str) -> None:
    seller = await gateway.user("ssrf-seller")
    body = {"base_url": url, "api_key": "sk-" + uuid.uuid4().hex}
    answer = await gateway.client.post("/api/marketplace/listings", json=listing_body(**body), headers=seller.auth)
    assert_error(answer, 400, param="base_url")
    assert (await gateway.client.get("/api/marketplace/listings", headers=seller.auth)).json()["data"] == []


URL_FIELDS: list[dict[str, Any]] = [
    {"base_url": "http://169.254.169.254/latest/meta-data"},
    {"api_base": "http://127.0.0.1:6379/"},
    {"url": "http://127.0.0.1:5432/"},
    {"endpoint": "http://10.0.0.1/"},
    {"user": "http://127.0.0.1/"},
    {"extra_headers": {"Host": "169.254.169.254"}},
    {"metadata": {"base_url": "http://127.0.0.1/"}},
]


async def test_no_request_body_field_can_send_a_chat_request_anywhere_but_the_listing(
    gateway: Gateway, provider: Provider
) -> None:
    model = await gateway.routable_model(PUBLIC)
    _, key = await gateway.funded_key()
    auth = {"Authorization": f"Bearer {key}", "Host": "169.254.169.254", "X-Forwarded-Host": "127.0.0.1"}
    for extra in URL_FIELDS:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
        answer = await gateway.client.post("/v1/chat/completions", json=body, headers=auth)
        assert answer.status_code in (200, 400), answer.text
    assert provider.seen, "the listing answered at least once"
    assert {str(request.url) for request in provider.seen} == {PUBLIC + "/chat/completions"}


async def test_routing_preferences_naming_urls_cannot_redirect_a_request(gateway: Gateway, provider: Provider) -> None:
    model = await gateway.routable_model(PUBLIC)
    _, key = await gateway.funded_key()
    for provider_field in (
        {"order": ["http://169.254.169.254/"]},
        {"only": ["127.0.0.1"]},
        {"order": ["lst_does_not_exist"], "allow_fallbacks": True},
    ):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "provider": provider_field}
        answer = await gateway.client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        assert answer.status_code in (200, 400, 404), answer.text
    assert {str(request.url) for request in provider.seen} <= {PUBLIC + "/chat/completions"}
    refused = await gateway.client.post(
        "/api/keys",
        json={"name": "r", "routing": {"base_url": "http://127.0.0.1/"}},
        headers=(await gateway.user()).auth,
    )
    assert_error(refused, 400)


async def test_a_provider_redirect_is_never_followed_on_the_hot_path(gateway: Gateway, provider: Provider) -> None:
    model = await gateway.routable_model(PUBLIC)
    _, key = await gateway.funded_key()
    provider.status, provider.headers = 302, {"location": "http://169.254.169.254/latest/meta-data/"}
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    answer = await gateway.client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code >= 400
    assert "169.254.169.254" not in answer.text
    assert [str(request.url) for request in provider.seen] == [PUBLIC + "/chat/completions"]


async def test_a_top_up_cannot_choose_where_stripe_is(gateway: Gateway) -> None:
    buyer = await gateway.user("ssrf-buyer")
    for field in ("stripe_api_base", "api_base", "return_url", "url"):
        body = {"amount_usd": "20.00", field: "http://169.254.169.254/"}
        answer = await gateway.client.post("/api/billing/topups", json=body, headers=buyer.auth)
        assert_error(answer, 400, param=field)


async def test_payout_accounts_are_stripe_ids_not_urls(gateway: Gateway) -> None:
    seller = await gateway.user("ssrf-seller")
    for value in ("http://169.254.169.254/", "acct_1/../../v1/charges", "acct_1?x=http://127.0.0.1"):
        answer = await gateway.client.put(
            "/api/seller/payout-account", json={"stripe_account_id": value}, headers=seller.auth
        )
        assert_error(answer, 400, param="stripe_account_id")
