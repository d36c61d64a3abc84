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


def check_addresses(host: str, addresses: Iterable[str], allow_private: bool) -> None:
    """Refuse unless every address is a public unicast address."""
    found = list(addresses)
    if not found:
        raise UnsafeUpstream(f"{host} does not resolve", param="base_url")
    if allow_private:
        return
    for text in found:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        mapped = getattr(address, "ipv4_mapped", None)
        if mapped is not None:
            address = mapped
        if not address.is_global or address.is_multicast:
            raise UnsafeUpstream(
                f"{host} resolves to a non-public address; upstreams must be on the public internet",
                param="base_url",
            )


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
