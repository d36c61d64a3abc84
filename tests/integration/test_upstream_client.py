"""`AiohttpUpstream`, the default provider client, against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest
from aiohttp import web

from aichat_gateway.proxy.upstream import AiohttpUpstream, is_timeout

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

TIMEOUTS = {"connect": 1.0, "read": 0.3, "write": 0.3, "pool": 1.0}


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {"method": request.method, "auth": request.headers.get("authorization"), "body": body.decode()},
        headers={"x-provider": "yes"},
    )


async def redirect(request: web.Request) -> web.Response:
    raise web.HTTPFound("http://169.254.169.254/latest")


async def chunks(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for n in range(3):
        await response.write(f"data: {n}\n\n".encode())
    await response.write_eof()
    return response


async def silent(request: web.Request) -> web.Response:
    await asyncio.Event().wait()  # never answers; the client's read timeout ends it
    raise AssertionError("unreachable")


@pytest.fixture
async def provider() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/echo", echo)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chunks", chunks)
    app.router.add_get("/silent", silent)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[AiohttpUpstream]:
    upstream = AiohttpUpstream(lambda: aiohttp.ClientSession(auto_decompress=False), TIMEOUTS)
    try:
        yield upstream
    finally:
        await upstream.aclose()


async def test_the_body_and_headers_reach_the_provider_and_its_answer_comes_back_whole(
    client: AiohttpUpstream, provider: str
) -> None:
    response = await client.post(provider + "/echo", b'{"q":1}', [(b"authorization", b"Bearer sk-up")])
    body = await response.aread()
    assert response.status_code == 200 and response.headers["x-provider"] == "yes"
    assert json.loads(body) == {"method": "POST", "auth": "Bearer sk-up", "body": '{"q":1}'}


async def test_a_redirect_is_handed_back_not_followed(client: AiohttpUpstream, provider: str) -> None:
    response = await client.send("GET", provider + "/redirect", b"", [])
    await response.aclose()
    assert response.status_code == 302 and response.headers["location"].startswith("http://169.254")


async def test_a_stream_arrives_chunk_by_chunk_through_the_responses_byte_stream(
    client: AiohttpUpstream, provider: str
) -> None:
    response = await client.send("GET", provider + "/chunks", b"", [])
    received = b"".join([part async for part in response.stream])  # type: ignore[union-attr]
    await response.aclose()
    assert received == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_a_refused_connection_is_a_transport_error_that_is_not_a_timeout(client: AiohttpUpstream) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: the connection is refused
        with pytest.raises(httpx.TransportError) as caught:
            await client.send("GET", f"http://127.0.0.1:{port}/", b"", [])
    assert not is_timeout(caught.value)


async def test_a_provider_that_never_answers_is_a_read_timeout(client: AiohttpUpstream, provider: str) -> None:
    with pytest.raises(httpx.TimeoutException) as caught:
        await client.send("GET", provider + "/silent", b"", [])
    assert is_timeout(caught.value)
