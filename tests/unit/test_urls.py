"""Upstream URL rules (SSRF defence) with an injected resolver: no network involved."""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from aichat_gateway.marketplace.errors import UnsafeUpstream
from aichat_gateway.marketplace.urls import PublicOnlyResolver, validate_upstream_url


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com/v1",  # plain http
        "https://127.0.0.1/v1",  # loopback
        "https://10.1.2.3/v1",  # private range
        "https://169.254.169.254/latest",  # link-local metadata address
        "https://[::1]/v1",  # IPv6 loopback
        "https://[::ffff:127.0.0.1]/v1",  # IPv4-mapped loopback
    ],
)
async def test_unsafe_upstreams_are_refused_in_production_mode(url: str) -> None:
    async def public_resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    with pytest.raises(UnsafeUpstream):
        await validate_upstream_url(url, allow_private=False, resolver=public_resolver)


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    async def sneaky_resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "192.168.1.10"]

    with pytest.raises(UnsafeUpstream, match="non-public"):
        await validate_upstream_url("https://api.example.com/v1", allow_private=False, resolver=sneaky_resolver)


async def test_a_public_https_upstream_is_accepted_and_normalised() -> None:
    async def public_resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    url = await validate_upstream_url("https://API.Example.com/v1/", allow_private=False, resolver=public_resolver)
    assert url == "https://api.example.com/v1"


async def test_development_mode_allows_plain_http_on_loopback() -> None:
    assert await validate_upstream_url("http://127.0.0.1:9100/v1", allow_private=True) == "http://127.0.0.1:9100/v1"


class FixedResolver(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(hostname=host, host=a, port=port, family=family, proto=0, flags=0) for a in self.addresses
        ]

    async def close(self) -> None:
        return None


async def test_the_connect_time_resolver_passes_public_addresses() -> None:
    results = await PublicOnlyResolver(FixedResolver("93.184.216.34")).resolve("api.example.com", 443)
    assert [r["host"] for r in results] == ["93.184.216.34"]


@pytest.mark.parametrize(
    "addresses", [("10.0.0.1",), ("93.184.216.34", "169.254.169.254"), ("::1",), ("::ffff:127.0.0.1",), ()]
)
async def test_the_connect_time_resolver_refuses_any_private_answer(addresses: tuple[str, ...]) -> None:
    with pytest.raises(OSError, match="non-public"):
        await PublicOnlyResolver(FixedResolver(*addresses)).resolve("rebinding.example.com", 443)
