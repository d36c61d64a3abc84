"""Upstream URL rules (SSRF defence): https only, public addresses only, no credentials in URLs.

The shape check is pure; the address check resolves the host once at listing time and refuses
if *any* address is non-public, so a name with one private record cannot slip through.
`GATEWAY_ALLOW_PRIVATE_UPSTREAMS=1` (development and tests) lifts the address rule and allows
plain http, because the fake upstream listens on http://127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from aichat_gateway.marketplace.errors import UnsafeUpstream

Resolver = Callable[[str, int], Awaitable[list[str]]]
_MAX_URL = 2048


def check_url_shape(url: str, allow_private: bool) -> tuple[str, str, int]:
    """Normalise a base URL; returns (normalised_url, host, port) or raises UnsafeUpstream."""
    if not isinstance(url, str) or not url or len(url) > _MAX_URL:
        raise UnsafeUpstream("base_url must be a URL of at most 2048 characters", param="base_url")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UnsafeUpstream(f"base_url is not a valid URL: {exc}", param="base_url") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeUpstream("base_url must use https", param="base_url")
    if parts.username or parts.password:
        raise UnsafeUpstream("base_url must not contain credentials; put the key in api_key", param="base_url")
    if not parts.hostname:
        raise UnsafeUpstream("base_url has no host", param="base_url")
    if parts.query or parts.fragment:
        raise UnsafeUpstream("base_url must not have a query or fragment", param="base_url")
    path = parts.path.rstrip("/")
    normalised = urlunsplit((parts.scheme, parts.netloc.lower(), path, "", ""))
    return normalised, parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public(text: str) -> bool:
    """A public unicast address (IPv4-mapped IPv6 judged by its IPv4 address)."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:
        address = mapped
    return address.is_global and not address.is_multicast


def check_addresses(host: str, addresses: Iterable[str], allow_private: bool) -> None:
    """Refuse unless every address is a public unicast address."""
    found = list(addresses)
    if not found:
        raise UnsafeUpstream(f"{host} does not resolve", param="base_url")
    if allow_private:
        return
    if not all(is_public(text) for text in found):
        raise UnsafeUpstream(
            f"{host} resolves to a non-public address; upstreams must be on the public internet",
            param="base_url",
        )


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver for upstream connections, refusing any name that resolves to a
    non-public address *when connecting*.

    Listing-time validation alone is not enough: a seller's DNS can answer a public address while
    the listing is checked and 169.254.169.254 a minute later (DNS rebinding). Checking the
    addresses aiohttp is about to connect to closes that gap; the refusal is an OSError, which the
    hot path treats like any connect error (fail over, breaker failure). Literal IPs in URLs never
    reach a resolver; listing validation already refused private ones.
    """

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results or not all(is_public(result["host"]) for result in results):
            raise OSError(f"refusing to connect: {host} resolves to a non-public address")
        return results

    async def close(self) -> None:
        await self._inner.close()


async def system_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return []
    return [str(info[4][0]) for info in infos]


async def validate_upstream_url(url: str, allow_private: bool, resolver: Resolver = system_resolver) -> str:
    normalised, host, port = check_url_shape(url, allow_private)
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addresses = [str(literal)]
    except ValueError:
        addresses = await resolver(host, port)
    check_addresses(host, addresses, allow_private)
    return normalised
