"""Fixtures of the attack suite: one in-process app per test module, on the run's database and Redis
prefix (the root conftest's `database_url` and `redis_prefix`), wrapped in a `Gateway` that makes
users, keys and listings. Shared helpers live in tests/support/attack.py.

`settings`, `app` and `client` override the root conftest's per-test ones with per-module ones:
starting and stopping an app costs ~0.5 s, and an attack suite is many short tests. So every test
module here runs its tests in one module-wide event loop (`pytest.mark.asyncio(loop_scope="module")`
in its `pytestmark`), the loop the app's pools live in; data stays apart by fresh users per test.
A module may override `settings` to attack another configuration (production mode, Stripe on).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import pytest_asyncio
from argon2 import PasswordHasher
from starlette.applications import Starlette

from aichat_gateway.config.settings import Settings, load_settings
from aichat_gateway.proxy.upstream import UpstreamClient
from tests.support.app import replace_services
from tests.support.attack import PASSWORD, Clock, Gateway, Provider
from tests.support.scratch import TEST_REDIS_URL, TEST_SECRET


@pytest.fixture(scope="module")
def settings(database_url: str, redis_prefix: str) -> Settings:
    """The root conftest's settings, once per module."""
    return load_settings(
        DATABASE_URL=database_url,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=TEST_SECRET,
        GATEWAY_REDIS_PREFIX=redis_prefix,
        GATEWAY_ALLOW_PRIVATE_UPSTREAMS=True,
        GATEWAY_LOG_JSON=True,
        GATEWAY_WORKER_IN_SERVE=False,  # as the root conftest's: no job worker in test apps
    )


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def app(settings: Settings, clock: Clock) -> AsyncIterator[Starlette]:
    from aichat_gateway.server.app import create_app

    application = create_app(settings, clock=clock)

    async def accept(provider: str, base_url: str, api_key: str) -> None:
        return None

    async with application.router.lifespan_context(application):
        # The provider-key check (tested against a real fake provider elsewhere) accepts every key:
        # these tests attack the gateway, not a provider.
        replace_services(application, key_checker=accept)
        yield application


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway.test") as c:
        yield c


@pytest.fixture(scope="session")
def password_hash() -> str:
    return PasswordHasher().hash(PASSWORD)


@pytest.fixture
def gateway(app: Starlette, client: httpx.AsyncClient, password_hash: str) -> Gateway:
    client.cookies.clear()  # a test's browser session never leaks into the next test
    return Gateway(app, client, password_hash)


@pytest.fixture
def provider(app: Starlette) -> Iterator[Provider]:
    """Every upstream request of this test goes to a recording fake provider (no sockets)."""
    fake = Provider()
    timeouts = {"connect": 1.0, "read": 1.0, "write": 1.0, "pool": 1.0}
    real = replace_services(app, upstream=UpstreamClient(httpx.MockTransport(fake.handle), timeouts))
    try:
        yield fake
    finally:
        app.state.services = real


@pytest_asyncio.fixture(loop_scope="module")
async def stranger(app: Starlette) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A client on a client address of its own, and that address: its login attempts count against
    no one else's per-address limit (the run shares one Redis prefix with every other suite)."""
    address = f"203.0.113.{uuid.uuid4().int % 250 + 1}-{uuid.uuid4().hex[:6]}"
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
        yield client, address
