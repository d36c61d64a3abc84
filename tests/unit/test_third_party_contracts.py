"""The third-party internals the gateway relies on, each checked in the shape we use it.

These are names outside the libraries' public APIs (or extension points used in a way their docs do
not promise). pyproject.toml bounds each library below the version where they could change unseen;
when a bound is raised, this file says at once what moved and which of our modules to fix, instead
of a hot-path test failing somewhere far from the cause. Each failure message names our module.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import aiohttp
import httpx
import pytest
import stripe
from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from aichat_gateway.redispool import LeanConnectionPool

pytestmark = pytest.mark.timeout(10)


def params(function: Callable[..., Any]) -> list[str]:
    return [name for name in inspect.signature(function).parameters if name != "self"]


def who(module: str, what: str) -> str:
    return f"{module} relies on {what}; see its docstring before raising the bound in pyproject.toml"


# ---- redis-py: aichat_gateway/redispool.py, redislua.py, redismux.py ------------------------------


def test_redis_pool_offers_the_checkout_steps_lean_pool_runs_without_the_lock() -> None:
    why = who("aichat_gateway/redispool.py (LeanConnectionPool)", "ConnectionPool's checkout steps")
    assert params(ConnectionPool.get_available_connection) == [], why
    assert not inspect.iscoroutinefunction(ConnectionPool.get_available_connection), why
    assert params(ConnectionPool.ensure_connection) == ["connection"], why
    assert inspect.iscoroutinefunction(ConnectionPool.ensure_connection), why
    assert params(ConnectionPool.make_connection) == [], why
    # Overridden: redis-py must still call them, and await them, per command.
    assert inspect.iscoroutinefunction(ConnectionPool.get_connection), why
    assert inspect.iscoroutinefunction(ConnectionPool.release), why
    assert params(ConnectionPool.disconnect) == ["inuse_connections"], why


async def test_redis_pool_keeps_its_connections_in_the_two_collections_lean_pool_edits() -> None:
    why = who(
        "aichat_gateway/redispool.py (LeanConnectionPool.release)", "_in_use_connections / _available_connections"
    )
    pool = LeanConnectionPool.from_url("redis://127.0.0.1:1/0")  # nothing connects here
    assert isinstance(pool._in_use_connections, set), why
    assert isinstance(pool._available_connections, list), why
    connection = pool.get_available_connection()
    assert connection in pool._in_use_connections, why
    await pool.release(connection)  # ours: no lock, no events
    assert connection not in pool._in_use_connections, why
    assert pool.get_available_connection() is connection, why  # given back and reused


def test_redis_connection_has_what_batch_sends_and_reads_with() -> None:
    why = who("aichat_gateway/redislua.py (Batch._send_and_read)", "AbstractConnection's send/read internals")
    assert inspect.iscoroutinefunction(AbstractConnection._send_packed_command), why
    assert params(AbstractConnection._send_packed_command) == ["command"], why
    assert "timeout" in params(AbstractConnection.read_response), why
    assert "nowait" in params(AbstractConnection.disconnect), why
    assert isinstance(inspect.getattr_static(AbstractConnection, "is_connected"), property), why
    assert inspect.iscoroutinefunction(AbstractConnection.connect), why
    assert params(AbstractConnection.should_reconnect) == [], why
    assert not inspect.iscoroutinefunction(AbstractConnection.should_reconnect), why


def test_redis_error_replies_parse_into_the_exceptions_the_multiplexer_hands_back() -> None:
    from redis._parsers.base import BaseParser

    why = who("aichat_gateway/redismux.py (_Link's hiredis Reader)", "redis._parsers.base.BaseParser.parse_error")
    assert isinstance(inspect.getattr_static(BaseParser, "parse_error"), classmethod), why
    assert isinstance(BaseParser.parse_error("NOSCRIPT No matching script."), NoScriptError), why
    assert isinstance(BaseParser.parse_error("ERR unknown command"), ResponseError), why
    # A reply Redis sends while loading is a connection error, raised as a pooled read would.
    assert isinstance(BaseParser.parse_error("LOADING Redis is loading the dataset"), RedisConnectionError), why


def test_redis_urls_make_the_connection_classes_and_fields_the_multiplexer_reads() -> None:
    why = who("aichat_gateway/redismux.py (Multiplexer)", "the pool's connection classes and their address fields")
    tcp = LeanConnectionPool.from_url(
        "redis://user:pw@example.test:6390/3?socket_timeout=2&socket_connect_timeout=1"
    ).make_connection()
    assert type(tcp) is Connection, why
    assert (tcp.host, tcp.port, tcp.username, tcp.password, tcp.db) == ("example.test", 6390, "user", "pw", 3), why
    assert (tcp.socket_timeout, tcp.socket_connect_timeout) == (2.0, 1.0), why
    unix = LeanConnectionPool.from_url("unix:///tmp/redis.sock?db=1").make_connection()
    assert type(unix) is UnixDomainSocketConnection, why
    assert unix.path == "/tmp/redis.sock", why
    tls = LeanConnectionPool.from_url("rediss://example.test").make_connection()
    assert isinstance(tls, SSLConnection), why  # not multiplexed: Multiplexer.supports says no


# ---- uvicorn: aichat_gateway/proxy/writes.py, server/cli.py ------------------------------------


class _Socket:
    """The transport uvicorn writes to; one entry per write (a system call)."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str) -> None:
        return None

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...


async def test_uvicorn_httptools_protocol_is_the_class_head_holding_extends() -> None:
    import uvicorn
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    from aichat_gateway.proxy.writes import HeadHoldingHttpToolsProtocol

    why = who("aichat_gateway/proxy/writes.py (HeadHoldingHttpToolsProtocol)", "uvicorn's HttpToolsProtocol")
    assert issubclass(HttpToolsProtocol, asyncio.Protocol), why
    assert params(HttpToolsProtocol.connection_made) == ["transport"], why
    assert "http" in inspect.signature(uvicorn.run).parameters, why  # server/cli.py hands the class in

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    config = Config(app, http=HeadHoldingHttpToolsProtocol, lifespan="off", log_config=None)
    config.load()
    assert config.http_protocol_class is HeadHoldingHttpToolsProtocol, why
    protocol = HeadHoldingHttpToolsProtocol(config, ServerState(), {}, _loop=asyncio.get_running_loop())
    assert protocol.loop is asyncio.get_running_loop(), why  # read in connection_made
    sock = _Socket()
    protocol.connection_made(sock)  # type: ignore[arg-type]
    try:
        protocol.data_received(b"GET / HTTP/1.1\r\nhost: gateway.test\r\n\r\n")
        for _ in range(10):
            await asyncio.sleep(0)
        # uvicorn writes the head in one write() that starts with the status line, then the body.
        assert len(sock.sent) == 1, why
        assert sock.sent[0].startswith(b"HTTP/1.1 200 "), why
        assert sock.sent[0].endswith(b"\r\n\r\nok"), why
    finally:
        protocol.connection_lost(None)


# ---- httpx-aiohttp: aichat_gateway/proxy/upstream.py ------------------------------------------


def test_httpx_aiohttp_offers_the_response_stream_and_exception_mapping_upstream_uses() -> None:
    from httpx_aiohttp.transport import AiohttpResponseStream, map_aiohttp_exceptions

    why = who("aichat_gateway/proxy/upstream.py (AiohttpUpstream)", "httpx_aiohttp.transport's internals")
    assert issubclass(AiohttpResponseStream, httpx.AsyncByteStream), why
    assert params(AiohttpResponseStream.__init__) == ["aiohttp_response"], why
    assert params(map_aiohttp_exceptions) == [], why
    # is_timeout tells a refused connection from a real timeout by the aiohttp error as the cause.
    for raised, mapped in (
        (aiohttp.ClientConnectionError("refused"), httpx.TransportError),
        (aiohttp.ServerTimeoutError("slow"), httpx.TimeoutException),
    ):
        with pytest.raises(mapped) as caught:
            with map_aiohttp_exceptions():
                raise raised
        assert caught.value.__cause__ is raised, why


# ---- stripe: aichat_gateway/billing/stripe_client.py ------------------------------------------


async def test_stripe_httpx_client_sends_through_the_client_that_tests_swap_in() -> None:
    from aichat_gateway.billing.stripe_client import _HTTPXOnTransport

    why = who("aichat_gateway/billing/stripe_client.py (_HTTPXOnTransport)", "stripe.HTTPXClient._client_async")
    plain = stripe.HTTPXClient(timeout=1.0)
    assert isinstance(plain._client_async, httpx.AsyncClient), why
    await plain.close_async()
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if len(seen) == 1:
            return httpx.Response(503, headers={"stripe-should-retry": "true"}, json={"error": {}})
        return httpx.Response(200, json={"id": "cus_1"})

    client = _HTTPXOnTransport(httpx.MockTransport(answer))
    paused: list[float] = []

    async def pause(secs: float) -> None:
        paused.append(secs)

    client.sleep_async = pause  # type: ignore[method-assign]
    try:
        _, status, _ = await client.request_with_retries_async(
            "get", "https://stripe.test/v1/customers/cus_1", {}, None, max_network_retries=1
        )
    finally:
        await client.close_async()
    assert seen == ["https://stripe.test/v1/customers/cus_1"] * 2, why
    assert status == 200, why
    assert len(paused) == 1, who("stripe_client.py (_HTTPXOnTransport.sleep_async)", "HTTPClient.sleep_async")


# ---- PgQueuer: aichat_gateway/jobs/ (pinned exactly in pyproject.toml) --------------------------


def test_pgqueuer_object_names_are_all_set_by_jobs_queue() -> None:
    from pgqueuer.adapters.persistence.qb import DBSettings

    from aichat_gateway.jobs.queue import names

    why = who("aichat_gateway/jobs/queue.py (names)", "DBSettings' fields, every one set so no env var moves one")
    assert set(DBSettings.model_fields) == names().model_fields_set, why


def test_pgqueuer_enqueue_statement_takes_the_arguments_enqueue_passes() -> None:
    from pgqueuer.adapters.persistence.qb import QueryQueueBuilder

    from aichat_gateway.jobs.queue import names

    why = who("aichat_gateway/jobs/queue.py (enqueue)", "QueryQueueBuilder.build_enqueue_query's parameters")
    sql = QueryQueueBuilder(names()).build_enqueue_query("skip")
    placeholders = re.findall(r"\$(\d)::(\w+)\[\]", sql)
    # priority, entrypoint, payload, execute_after, dedupe_key, headers: in this order.
    expected = [("1", "int"), ("2", "text"), ("3", "bytea"), ("4", "interval"), ("5", "text"), ("6", "jsonb")]
    assert placeholders == expected, why
    assert re.search(r"t\(priority, entrypoint, payload, execute_after, dedupe_key, headers, ord\)", sql), why


def test_pgqueuer_worker_parts_have_the_shape_the_worker_builds_on() -> None:
    from pgqueuer.adapters.persistence.qb import QueryBuilderEnvironment
    from pgqueuer.adapters.persistence.queries import Queries
    from pgqueuer.core.executors import AbstractEntrypointExecutor, EntrypointExecutorParameters
    from pgqueuer.core.qm import QueueManager
    from pgqueuer.core.sm import SchedulerManager
    from pgqueuer.domain import models
    from pgqueuer.domain.errors import RetryRequested

    why = who("aichat_gateway/jobs/worker.py and queue.py", "PgQueuer's managers, executors and query builders")
    assert [f.name for f in dataclasses.fields(AbstractEntrypointExecutor)] == ["parameters"], why
    assert params(AbstractEntrypointExecutor.execute) == ["job", "context"], why
    assert {"concurrency_limit", "func", "accepts_context", "on_failure"} <= {
        f.name for f in dataclasses.fields(EntrypointExecutorParameters)
    }, why
    assert {"shutdown", "queue_manager_id"} <= {f.name for f in dataclasses.fields(QueueManager)}, why
    assert params(QueueManager.__init__)[:2] == ["queries", "channel"], why
    assert params(QueueManager.register_executor) == ["name", "executor"], why
    assert {"dequeue_timeout", "batch_size", "heartbeat_timeout"} <= set(params(QueueManager.run)), why
    assert "shutdown" in {f.name for f in dataclasses.fields(SchedulerManager)}, why
    assert params(SchedulerManager.schedule)[:2] == ["entrypoint", "expression"], why
    assert "accepts_context" in params(SchedulerManager.schedule), why
    assert {"id", "entrypoint", "payload", "attempts"} <= set(models.Job.model_fields), why
    assert params(RetryRequested.__init__) == ["delay", "reason"], why
    assert RetryRequested(delay=timedelta(seconds=1), reason="x").delay == timedelta(seconds=1), why
    assert params(Queries.__init__)[:4] == ["driver", "qbe", "qbq", "qbs"], why
    assert callable(Queries.plan_upgrade), why
    assert "create_schema" in params(QueryBuilderEnvironment.build_install_query), why


# ---- Starlette: aichat_gateway/server/app.py, proxy/relay.py, proxy/inbound.py -------------------


def test_starlette_state_keeps_its_values_in_the_dict_app_state_mirrors() -> None:
    from aichat_gateway.server.app import AppState

    why = who("aichat_gateway/server/app.py (AppState)", "starlette State's `_state` dict")
    backing: dict[str, Any] = {}
    assert State(backing)._state is backing, why
    state = AppState()
    state.services = "svc"
    assert state._state == {"services": "svc"}, why
    assert state["services"] == "svc", why
    assert list(state) == ["services"], why


def test_starlette_request_state_is_a_view_of_the_scope_state_the_hot_path_reads() -> None:
    why = who("aichat_gateway/proxy/inbound.py, chat.py", "Request.state wrapping scope['state']")
    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "state": {"body_size": 7}}
    request = Request(scope)
    assert request.state.body_size == 7, why
    request.state.request_id = "req_1"
    assert scope["state"]["request_id"] == "req_1", why


def test_starlette_response_headers_can_be_built_without_its_init() -> None:
    why = who("aichat_gateway/proxy/relay.py (RelayStream)", "Response.init_headers without Response.__init__")
    response = Response.__new__(Response)
    response.status_code = 200
    response.media_type = "text/event-stream"
    response.init_headers({"x-request-id": "req_1"})
    assert response.raw_headers == [
        (b"x-request-id", b"req_1"),
        (b"content-type", b"text/event-stream; charset=utf-8"),
    ], why  # and no content-length: a stream has no body attribute
