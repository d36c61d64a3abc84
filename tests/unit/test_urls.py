"""Upstream URL rules (SSRF defence) with an injected resolver: no network involved.

Nothing here connects anywhere: the connect-time guards are given addresses directly, and the one
socket `public_socket` makes for a public address is closed unconnected.
"""

from __future__ import annotations

import socket

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from aichat_gateway.marketplace.errors import UnsafeUpstream
from aichat_gateway.marketplace.urls import (
    PublicOnlyResolver,
    connect_refusal,
    is_public,
    public_socket,
    validate_upstream_url,
)


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


# ---- IPv6 forms that embed an IPv4 address, and other non-public IPv6 ------------------------------

# Transition and translation forms are refused outright, whatever IPv4 address they carry: the
# public ones (8.8.8.8 inside) as well as loopback, private and the metadata address.
TRANSITION_FORMS = [
    "64:ff9b::7f00:1",  # NAT64 well-known prefix, 127.0.0.1 inside
    "64:ff9b::a9fe:a9fe",  # NAT64, 169.254.169.254 (cloud metadata)
    "64:ff9b::a00:1",  # NAT64, 10.0.0.1
    "64:ff9b::808:808",  # NAT64, 8.8.8.8 (public, still refused)
    "64:ff9b:1::7f00:1",  # NAT64 local-use prefix
    "64:ff9b:1:ffff::808:808",
    "::127.0.0.1",  # IPv4-compatible
    "::169.254.169.254",
    "::8.8.8.8",
    "::ffff:0:127.0.0.1",  # IPv4-translated
    "::ffff:0:8.8.8.8",
    "2002:7f00:1::1",  # 6to4, 127.0.0.1 inside
    "2002:a9fe:a9fe::1",  # 6to4, 169.254.169.254
    "2002:808:808::1",  # 6to4, 8.8.8.8
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2001::1",
]
OTHER_NON_PUBLIC_V6 = [
    "fec0::1",  # site-local (deprecated, but Python 3.11 calls it global)
    "fd00::1",  # unique-local
    "fc00::1",
    "100::1",  # discard-only
    "fe80::1",  # link-local
    "fe80::1%eth0",  # scoped
    "2606:4700::1111%eth0",  # a zone on a global address: still refused
    "ff02::1",  # multicast
    "ff0e::1",
    "2001:db8::1",  # documentation
    "3fff::1",
    "::",
    "::1",
    "::ffff:127.0.0.1",  # IPv4-mapped: judged as its IPv4 address
    "::ffff:169.254.169.254",
    "5f00::1",  # segment routing SIDs, outside 2000::/3
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001:81b::200e", "::ffff:93.184.216.34"]


@pytest.mark.parametrize("address", TRANSITION_FORMS)
def test_an_ipv6_transition_form_is_not_public_whatever_ipv4_it_embeds(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", OTHER_NON_PUBLIC_V6)
def test_local_special_and_scoped_ipv6_addresses_are_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", ["192.88.99.1", "224.0.0.1", "255.255.255.255", "240.0.0.1", "100.64.0.1"])
def test_relay_anycast_multicast_broadcast_reserved_and_shared_ipv4_are_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_ipv4_global_ipv6_and_mapped_public_ipv4_are_public(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize("text", ["", "not-an-address", "1.2.3", "::g", "%", "1.2.3.4%"])
def test_text_that_is_not_an_address_is_not_public_rather_than_an_error(text: str) -> None:
    assert not is_public(text)


@pytest.mark.parametrize("address", TRANSITION_FORMS + OTHER_NON_PUBLIC_V6)
async def test_a_literal_non_public_ipv6_base_url_is_refused_at_listing_time(address: str) -> None:
    async def never(host: str, port: int) -> list[str]:
        raise AssertionError("a literal address needs no resolver")

    host = address.replace("%", "%25")  # a zone id in a URL is percent-encoded (RFC 6874)
    with pytest.raises(UnsafeUpstream) as caught:
        await validate_upstream_url(f"https://[{host}]/v1", allow_private=False, resolver=never)
    assert caught.value.param == "base_url"


@pytest.mark.parametrize("address", TRANSITION_FORMS + OTHER_NON_PUBLIC_V6)
async def test_a_name_resolving_to_a_non_public_ipv6_address_is_refused_at_listing_time(address: str) -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", address]

    with pytest.raises(UnsafeUpstream, match="non-public"):
        await validate_upstream_url("https://api.example.com/v1", allow_private=False, resolver=resolver)


@pytest.mark.parametrize("address", TRANSITION_FORMS + OTHER_NON_PUBLIC_V6)
async def test_the_connect_time_resolver_refuses_a_non_public_ipv6_answer(address: str) -> None:
    with pytest.raises(OSError, match="non-public"):
        await PublicOnlyResolver(FixedResolver(address)).resolve("rebinding.example.com", 443)


# ---- per request: the scheme and literal hosts (which never reach a resolver) ----------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com/v1/chat/completions",  # plain http
        "http://93.184.216.34/v1/chat/completions",
        "ftp://93.184.216.34/v1",
        "https://127.0.0.1/v1/chat/completions",
        "https://169.254.169.254/latest",
        "https://[::ffff:127.0.0.1]/v1/chat/completions",
        "https://[64:ff9b::a9fe:a9fe]/v1/chat/completions",
        "https://[2002:7f00:1::1]/v1/chat/completions",
        "https://[::10.0.0.1]/v1/chat/completions",
        "https://[fe80::1%25eth0]/v1/chat/completions",
        "https://user:pw@api.example.com/v1",
        "https:///v1",
    ],
)
def test_a_request_url_a_listing_could_not_have_is_refused_before_sending(url: str) -> None:
    assert connect_refusal(url) is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com/v1/chat/completions",  # a name: judged by the resolver and the socket guard
        "https://93.184.216.34/v1/chat/completions",
        "https://[2606:4700:4700::1111]:8443/v1/chat/completions",
    ],
)
def test_a_public_https_request_url_passes_the_per_request_check(url: str) -> None:
    assert connect_refusal(url) is None


# ---- per connection: every address a socket is about to connect to ---------------------------------


def addr_info(address: str, scope_id: int = 0) -> tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple]:  # type: ignore[type-arg]
    if ":" in address:
        return (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, 443, 0, scope_id))
    return (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, 443))


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "::ffff:127.0.0.1", *TRANSITION_FORMS]
)
def test_the_socket_guard_refuses_a_non_public_destination(address: str) -> None:
    with pytest.raises(OSError, match="not a public address"):
        public_socket(addr_info(address))


def test_the_socket_guard_refuses_a_destination_with_a_scope_id() -> None:
    with pytest.raises(OSError, match="not a public address"):
        public_socket(addr_info("2606:4700:4700::1111", scope_id=2))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111"])
def test_the_socket_guard_makes_an_unconnected_socket_for_a_public_destination(address: str) -> None:
    sock = public_socket(addr_info(address))
    try:
        assert sock.family == addr_info(address)[0]
        assert sock.type == socket.SOCK_STREAM
    finally:
        sock.close()
