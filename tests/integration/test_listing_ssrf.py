"""SSRF: a listing can only point at the public internet, checked when listed and when connecting.

The app runs in production mode here (GATEWAY_ALLOW_PRIVATE_UPSTREAMS off), in this process.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
import respx
from aiohttp.abc import AbstractResolver, ResolveResult
from starlette.applications import Starlette

from aichat_gateway.config.settings import Settings
from aichat_gateway.marketplace.errors import UpstreamRefused
from aichat_gateway.marketplace.urls import public_socket
from aichat_gateway.proxy.keycheck import check_provider_key
from aichat_gateway.proxy.upstream import AiohttpUpstream, UpstreamClient, create_upstream_client, is_timeout
from aichat_gateway.server.app import create_app
from tests.support.app import replace_services
from tests.support.fakes import Fakes
from tests.support.ssrf import UNSAFE

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

PASSWORD = "ssrf-test-password"


@pytest.fixture
async def production_app(settings: Settings) -> AsyncIterator[Starlette]:
    app = create_app(settings.model_copy(update={"allow_private_upstreams": False}), configure_logs=False)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(production_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=production_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
        yield c


async def seller(client: httpx.AsyncClient) -> dict[str, str]:
    email = f"ssrf-{uuid.uuid4().hex[:10]}@example.com"
    assert (await client.post("/api/auth/register", json={"email": email, "password": PASSWORD})).status_code == 201
    token = (await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})).json()
    return {"authorization": f"Bearer {token['access_token']}"}


def listing(base_url: str) -> dict[str, Any]:
    return {
        "name": "ssrf",
        "provider": "openai",
        "base_url": base_url,
        "api_key": "sk-provider-" + secrets.token_hex(12),
        "models": [{"model": "gpt-4o-mini"}],
        "pricing": {"multiplier": "1"},
        "attest_resale": True,
    }


@pytest.mark.parametrize("url", UNSAFE)
async def test_an_unsafe_base_url_is_refused_at_listing_time_and_nothing_is_stored(
    client: httpx.AsyncClient, db: Any, url: str
) -> None:
    headers = await seller(client)
    answer = await client.post("/api/marketplace/listings", json=listing(url), headers=headers)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["param"]) == ("unsafe_upstream", "base_url")
    assert await db.fetchval("SELECT count(*) FROM listings WHERE base_url = $1", url.rstrip("/")) == 0


async def test_an_unsafe_base_url_is_refused_when_a_listing_is_changed(
    client: httpx.AsyncClient, production_app: Starlette
) -> None:
    async def accept(provider: str, base_url: str, api_key: str) -> None:
        return None  # no internet here: the public address below is never called

    replace_services(production_app, key_checker=accept)
    headers = await seller(client)
    created = await client.post("/api/marketplace/listings", json=listing("https://93.184.216.34/v1"), headers=headers)
    assert created.status_code == 201, created.text
    listing_id = created.json()["id"]
    body = {"base_url": "https://169.254.169.254/v1", "api_key": "sk-provider-" + secrets.token_hex(12)}
    answer = await client.patch(f"/api/marketplace/listings/{listing_id}", json=body, headers=headers)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "unsafe_upstream"


async def test_a_name_that_turns_private_after_listing_is_refused_when_connecting(
    settings: Settings, fakes: Fakes
) -> None:
    """DNS rebinding: the hot path's resolver checks the addresses it is about to connect to."""
    port = fakes.main.base_url.split(":")[2].split("/")[0]
    client = create_upstream_client(settings.model_copy(update={"allow_private_upstreams": False}))
    try:
        with pytest.raises(httpx.TransportError) as caught:
            await client.send("GET", f"https://localhost:{port}/v1/models", b"", [])
        assert not is_timeout(caught.value)  # a refusal: the hot path fails over at once
        assert "non-public" in str(caught.value.__cause__.__cause__ or caught.value)
    finally:
        await client.aclose()


async def test_development_mode_still_connects_to_loopback_names(settings: Settings, fakes: Fakes) -> None:
    port = fakes.main.base_url.split(":")[2].split("/")[0]
    client = create_upstream_client(settings)  # GATEWAY_ALLOW_PRIVATE_UPSTREAMS=1 in tests
    try:
        answer = await client.send("GET", f"http://localhost:{port}/v1/models", b"", [])
        await answer.aread()
        assert answer.status_code in (200, 401)
    finally:
        await client.aclose()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_provider_that_redirects_is_refused_at_listing_time(status: int) -> None:
    client = UpstreamClient(httpx.AsyncHTTPTransport(), {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0})
    with respx.mock:
        respx.get("https://api.example.com/v1/models").mock(
            return_value=httpx.Response(status, headers={"location": "http://169.254.169.254/latest"})
        )
        with pytest.raises(UpstreamRefused) as caught:
            await check_provider_key(client, "openai", "https://api.example.com/v1", "sk-test")
    assert caught.value.param == "base_url" and "redirect" in caught.value.message


@pytest.fixture
async def listener() -> AsyncIterator[tuple[int, list[object]]]:
    """A TCP server on 127.0.0.1 that only records the connections that reach it."""
    reached: list[object] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reached.append(writer.get_extra_info("peername"))
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], reached


# Loopback spellings only: were a guard missing, the connection would reach `listener`, never
# leave the machine.
LITERAL_LOOPBACK = ["https://127.0.0.1:{port}/v1", "https://[::ffff:127.0.0.1]:{port}/v1", "http://127.0.0.1:{port}/v1"]


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
@pytest.mark.parametrize("base_url", LITERAL_LOOPBACK)
async def test_a_literal_private_address_or_plain_http_is_refused_when_connecting_and_nothing_connects(
    settings: Settings, listener: tuple[int, list[object]], base_url: str, transport: str
) -> None:
    """A literal IP never reaches a resolver, and a stored row is not trusted to have been checked."""
    port, reached = listener
    production = settings.model_copy(update={"allow_private_upstreams": False, "upstream_transport": transport})
    client = create_upstream_client(production)
    try:
        with pytest.raises(httpx.ConnectError, match="refusing to connect") as caught:
            await client.send("POST", base_url.format(port=port) + "/chat/completions", b"{}", [])
        assert not is_timeout(caught.value)  # a refusal: the hot path fails over at once
    finally:
        await client.aclose()
    assert reached == []


class LoopbackResolver(AbstractResolver):
    """A resolver that answers 127.0.0.1 for every name and checks nothing."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [ResolveResult(hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0)]

    async def close(self) -> None:
        return None


async def test_the_socket_guard_refuses_a_private_destination_however_it_was_found(
    listener: tuple[int, list[object]],
) -> None:
    """The last line: whatever resolved the name, the socket is never connected to a private address."""
    port, reached = listener

    def session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(resolver=LoopbackResolver(), socket_factory=public_socket)
        return aiohttp.ClientSession(connector=connector, auto_decompress=False)

    client = AiohttpUpstream(session, {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0})
    try:
        with pytest.raises(httpx.TransportError) as caught:
            await client.send("GET", f"http://api.example.com:{port}/v1/models", b"", [])
        assert not is_timeout(caught.value)
        assert "not a public address" in str(caught.value.__cause__.__cause__)
    finally:
        await client.aclose()
    assert reached == []
