"""The pooled upstream HTTP client and the classification of upstream outcomes.

One client per process. By default requests go through aiohttp (`AiohttpUpstream`): on this
2-core machine kind httpx's own pool collapsed under 50 concurrent streams (encode/httpx#3215)
while the aiohttp transport held about three times the throughput at a fifteenth of the p99
(DESIGN.md, docs/performance.md; re-measure with `make bench` and GATEWAY_UPSTREAM_TRANSPORT=httpx).
Redirects are never followed: a listing's URL is the only place a request may go.

In production mode (`GATEWAY_ALLOW_PRIVATE_UPSTREAMS` off) every request's URL is checked again
before it is sent (`urls.connect_refusal`, memoised per URL: https, a literal IP host public), and
the aiohttp connector checks every name it resolves and every address it connects to
(`PublicOnlyResolver`, `public_socket`). A refusal is an `httpx.ConnectError`: the hot path fails
over as for any connection error.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp
import httpx
from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions

from aichat_gateway.config.settings import Settings
from aichat_gateway.marketplace.urls import PublicOnlyResolver, connect_refusal, public_socket


class Upstream(Protocol):
    """What the hot path sends provider requests with: `UpstreamClient` or `AiohttpUpstream`."""

    async def post(self, url: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx.Response: ...

    async def send(self, method: str, url: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx.Response: ...

    async def aclose(self) -> None: ...


class UpstreamClient:
    """One pooled HTTP client per process, used at the transport level.

    `httpx.AsyncClient.send` spends a third of its time on cookies, redirects, auth and URL
    merging, none of which a relay wants, so requests go straight to the transport. Tests hand in
    any httpx transport (respx's mock transport included).
    """

    def __init__(
        self, transport: httpx.AsyncBaseTransport, timeout: dict[str, float], *, public_only: bool = False
    ) -> None:
        self._transport = transport
        self._timeout = timeout
        self._public_only = public_only

    async def post(self, url: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
        """Send; the answer's body is left unread (stream it with `aiter_raw`, then `aclose`)."""
        return await self.send("POST", url, body, headers)

    async def send(self, method: str, url: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
        if self._public_only:
            refuse_unsafe(url)
        request = httpx.Request(
            method, _parsed(url), content=body, headers=headers, extensions={"timeout": self._timeout}
        )
        response = await self._transport.handle_async_request(request)
        response.request = request
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


class AiohttpUpstream:
    """The default client: aiohttp called directly, answers handed back as `httpx.Response`s.

    What `httpx-aiohttp`'s transport does, minus building an `httpx.Request` that is only turned
    back into aiohttp's arguments (URL printed back to text, headers re-encoded, a ClientTimeout
    per request; docs/performance.md has the cost). The library's exception
    mapping and response stream are used as they are, so errors and `is_timeout` read the same.
    The session is created on first use, inside the serving event loop.
    """

    def __init__(
        self,
        make_session: Callable[[], aiohttp.ClientSession],
        timeout: dict[str, float],
        *,
        public_only: bool = False,
    ) -> None:
        self._make_session = make_session
        self._public_only = public_only
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            sock_connect=timeout["connect"], sock_read=timeout["read"], connect=timeout["pool"]
        )

    async def post(self, url: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
        return await self.send("POST", url, body, headers)

    async def send(self, method: str, url: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
        if self._public_only:
            refuse_unsafe(url)
        if self._session is None:
            self._session = self._make_session()
        with map_aiohttp_exceptions():
            response = await self._session.request(
                method,
                url,
                data=body or None,
                headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in headers],
                allow_redirects=False,
                timeout=self._timeout,
            )
        extensions = {"http_version": b"HTTP/1.1"}
        return httpx.Response(
            response.status, headers=response.raw_headers, stream=AiohttpResponseStream(response), extensions=extensions
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


def refuse_unsafe(url: str) -> None:
    """Production mode's per-request check: one memoised lookup per request (`connect_refusal`)."""
    reason = connect_refusal(url)
    if reason is not None:
        raise httpx.ConnectError(f"refusing to connect: {reason}")


@functools.lru_cache(maxsize=4096)
def _parsed(url: str) -> httpx.URL:
    """A listing's endpoint, parsed once (httpx.URL is immutable; parsing per request showed in profiles)."""
    return httpx.URL(url)


def create_upstream_client(settings: Settings) -> Upstream:
    timeout = {
        "connect": settings.upstream_connect_timeout,
        "read": settings.upstream_read_timeout,
        "write": settings.upstream_read_timeout,
        "pool": settings.upstream_connect_timeout,
    }
    public_only = not settings.allow_private_upstreams
    if settings.upstream_transport == "aiohttp":

        def session() -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(
                limit=settings.upstream_max_connections,
                keepalive_timeout=30.0,
                ttl_dns_cache=60,
                resolver=PublicOnlyResolver() if public_only else None,
                socket_factory=public_socket if public_only else None,
            )
            return aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False)

        return AiohttpUpstream(session, timeout, public_only=public_only)
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_connections,
        keepalive_expiry=30.0,
    )
    # httpx resolves names inside httpcore, out of our reach: with this transport, names are
    # checked at listing time only (DNS rebinding is covered by the aiohttp transport alone).
    transport = httpx.AsyncHTTPTransport(limits=limits, trust_env=False)
    return UpstreamClient(transport, timeout, public_only=public_only)


def is_timeout(exc: httpx.HTTPError) -> bool:
    """Did the upstream really time out? httpx-aiohttp maps *every* aiohttp connection error,
    "connection refused" included, to httpx.ConnectTimeout; look at the cause to tell them apart."""
    if not isinstance(exc, httpx.TimeoutException):
        return False
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError)
    return True


class StatusKind(enum.Enum):
    """What an upstream HTTP status means for failover (not how the request ends: proxy/outcome.py)."""

    OK = "ok"
    RETRYABLE = "retryable"  # connect error, timeout, 429, 5xx: try the next listing
    KEY_REJECTED = "key_rejected"  # 401/403: the listing's key is bad; try the next listing
    CLIENT_ERROR = "client_error"  # other 4xx: the buyer's request is wrong; relay the answer


@dataclass(frozen=True, slots=True)
class Classified:
    kind: StatusKind
    retry_after: float | None = None


def classify_status(status: int, retry_after_header: str | None = None) -> Classified:
    """Pure: what an upstream HTTP status means for failover."""
    if 200 <= status < 300:
        return Classified(StatusKind.OK)
    if status in (401, 403):
        return Classified(StatusKind.KEY_REJECTED)
    if status == 429 or status >= 500 or status == 408:
        return Classified(StatusKind.RETRYABLE, parse_retry_after(retry_after_header))
    if 300 <= status < 400:
        return Classified(StatusKind.RETRYABLE)  # a redirect is never followed; treat the listing as failing
    return Classified(StatusKind.CLIENT_ERROR)


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None
