"""Checking a provider key when it is listed: one cheap, authenticated model listing.

The request comes from the provider kind's adapter (OpenAI: `/models` with a bearer key;
Anthropic: `/v1/models` with `x-api-key`). A listing whose key the provider rejects, whose URL
does not answer, or that redirects (redirects are never followed) is refused before it can take
buyer traffic. The key never appears in the error: only the provider's status or the kind of
network failure does.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from aichat_gateway.marketplace.errors import UpstreamRefused
from aichat_gateway.proxy.adapters import adapter_for
from aichat_gateway.proxy.upstream import Upstream, is_timeout


async def check_provider_key(client: Upstream, provider: str, base_url: str, api_key: str) -> None:
    host = urlsplit(base_url).netloc
    check = adapter_for(provider).validation_request(base_url, api_key)
    try:
        response = await client.send(check.method, check.url, check.body, check.headers)
    except httpx.HTTPError as exc:
        what = "did not answer in time" if is_timeout(exc) else "could not be reached"
        raise UpstreamRefused(f"{host} {what} when we checked the key", param="base_url") from None
    status = response.status_code
    await response.aclose()
    if status in (401, 403):
        raise UpstreamRefused(f"the provider rejected this API key (HTTP {status})", param="api_key")
    if 300 <= status < 400:
        raise UpstreamRefused(f"{host} answered with a redirect; redirects are not followed", param="base_url")
    if status != 200:
        raise UpstreamRefused(f"{host} answered HTTP {status} when we listed its models", param="base_url")


async def skip_key_check(provider: str, base_url: str, api_key: str) -> None:
    """GATEWAY_CHECK_LISTING_KEYS=0: accept without asking the provider (offline development)."""
