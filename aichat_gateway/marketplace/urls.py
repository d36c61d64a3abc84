"""Upstream URL rules (SSRF defence): https only, public addresses only, no credentials in URLs.

Three checks, at three moments:

- When listed or changed (`validate_upstream_url`): the URL's shape, then its host's addresses,
  resolved once; refused if *any* address is non-public, so a name with one private record cannot
  slip through.
- Per request (`connect_refusal`, memoised per URL so the hot path pays one cache lookup): the
  scheme is https and a literal IP host is public. A literal IP never reaches a resolver, and a
  row written in development mode or by hand must not be trusted blindly.
- Per connection (`PublicOnlyResolver` for names, `public_socket` for every address a socket is
  about to connect to, literal or resolved): a name that turns private after listing (DNS
  rebinding) is refused when connecting.

What "public" means (`is_public`): IPv4 — globally reachable unicast (Python's `is_global`),
not multicast, not the 6to4 relay anycast 192.88.99.0/24. IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is
judged as the IPv4 address it is: a dual-stack socket connects to that IPv4 address itself.
IPv6 — only global unicast (`2000::/3`) that Python calls global. Every *transition or
translation* form that carries an IPv4 address inside an IPv6 one is refused outright, whether
the embedded address is public or not: NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), IPv4-compatible
(`::a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), 6to4 (`2002::/16`) and Teredo (`2001::/32`).
Unwrapping each form and judging the IPv4 inside would allow the same providers, but every
unwrapping rule is one more place to be wrong (Teredo's address is obfuscated, NAT64 prefixes are
chosen per network), and no provider needs them: a provider with IPv4 is listed by its IPv4
address or name. Site-local (`fec0::/10`), unique-local (`fc00::/7`), link-local, the
discard-only prefix (`100::/64`), documentation prefixes and multicast are outside `2000::/3` or
refused by name. An address with a zone (`fe80::1%eth0`) is refused: a zone only means something
on a local link.

`GATEWAY_ALLOW_PRIVATE_UPSTREAMS=1` (development and tests) lifts the address rule and allows
plain http, because the fake upstream listens on http://127.0.0.1; the per-request and
per-connection guards are then not installed at all.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from aichat_gateway.marketplace.errors import UnsafeUpstream

Resolver = Callable[[str, int], Awaitable[list[str]]]
_MAX_URL = 2048

# The only IPv6 block allocated for global unicast; everything outside it is local, special or
# a transition form (NAT64, IPv4-compatible, IPv4-translated, discard-only, ULA, site-local, …).
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_REFUSED_V6 = (
    ipaddress.IPv6Network("2001::/32"),  # Teredo: tunnels to an IPv4 server and client it carries
    ipaddress.IPv6Network("2002::/16"),  # 6to4: the next 32 bits are an IPv4 address
    ipaddress.IPv6Network("2001:db8::/32"),  # documentation
    ipaddress.IPv6Network("3fff::/20"),  # documentation (RFC 9637; newer than Python 3.11's tables)
)
_REFUSED_V4 = (ipaddress.IPv4Network("192.88.99.0/24"),)  # 6to4 relay anycast (deprecated, RFC 7526)


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
    """A public unicast address (the module docstring says which); False for anything unparsable."""
    if "%" in text:
        return False  # a zone id (fe80::1%eth0): only meaningful on a local link
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is None:
            return (
                address in _GLOBAL_UNICAST_V6
                and not any(address in network for network in _REFUSED_V6)
                and address.is_global
            )
        address = mapped
    return address.is_global and not address.is_multicast and not any(address in net for net in _REFUSED_V4)


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


@functools.lru_cache(maxsize=4096)
def connect_refusal(url: str) -> str | None:
    """Why a production upstream request to `url` must not be sent, or None if it may be.

    Pure and memoised per URL: listing URLs are few and fixed, so the hot path pays one cache
    lookup. Checked here: https, no credentials, a literal IP host public. A name is left to
    `PublicOnlyResolver` and `public_socket`, which see the addresses actually connected to.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "not a valid URL"
    if parts.scheme != "https":
        return "upstreams must use https"
    if parts.username is not None or parts.password is not None:
        return "credentials in an upstream URL"
    if not host:
        return "no host in the upstream URL"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None  # a name: judged on the addresses it resolves to, when connecting
    return None if is_public(host) else f"{host} is not a public address"


def public_socket(addr_info: AddrInfoType) -> socket.socket:
    """aiohttp's `socket_factory` for upstream connections: refuses any non-public destination.

    aiohttp calls it with the address it is about to connect to, for every attempt (literal IPs,
    resolved names, each happy-eyeballs candidate), so nothing reaches `connect()` unchecked. The
    refusal is an OSError, which aiohttp reports as a connection error: the hot path fails over.
    """
    family, kind, proto, _, destination = addr_info
    host = str(destination[0])
    scoped = len(destination) >= 4 and bool(destination[3])  # an IPv6 scope id: a local link
    if scoped or not is_public(host):
        raise OSError(f"refusing to connect: {host} is not a public address")
    return socket.socket(family=family, type=kind, proto=proto)


class PublicOnlyResolver(AbstractResolver):
    """aiohttp's resolver for upstream connections, refusing any name that resolves to a
    non-public address *when connecting*.

    Listing-time validation alone is not enough: a seller's DNS can answer a public address while
    the listing is checked and 169.254.169.254 a minute later (DNS rebinding). Checking the
    addresses aiohttp is about to connect to closes that gap; the refusal is an OSError, which the
    hot path treats like any connect error (fail over, breaker failure). Literal IPs never reach a
    resolver: `connect_refusal` and `public_socket` cover them.
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
