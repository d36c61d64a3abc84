"""Fixtures for the `/v1` hot-path tests: real gateway and fake-upstream processes on 127.0.0.1.

Everything here is a subprocess started through the public CLI (`aichat-gateway serve`,
`aichat-gateway fake-upstream`), because streaming, disconnects, SIGTERM and cross-process
revocation only exist over real sockets. Processes are started once per session (the SIGTERM test
starts its own), each logs to its own file under the session's tmp dir so tests can search the
logs, and every one of them is killed at teardown, also when a test failed.

The marketplace is seeded over HTTP, the way a new user would do it: a seller registers, logs in
and lists the fake upstreams; a buyer registers, logs in and creates a gateway key.

The gateways get the `settings` fixture's variables (DATABASE_URL, REDIS_URL, GATEWAY_SECRET_KEY,
GATEWAY_REDIS_PREFIX, GATEWAY_ALLOW_PRIVATE_UPSTREAMS) but a database and Redis prefix of their
own: the session database is shared with tests that list gpt-4o-mini cheaper, on dead upstreams,
and the router would rightly prefer those listings.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis as redis_sync
from redis.asyncio import Redis

from aichat_gateway.billing.amounts import parse_usd
from aichat_gateway.billing.audit import audit
from aichat_gateway.billing.credits import grant_credit
from aichat_gateway.billing.holds import HotBalances
from aichat_gateway.billing.meter import decode_entry
from aichat_gateway.billing.settle import Settler
from aichat_gateway.config.settings import Settings, load_settings
from tests.ports import free_port
from tests.scratch import TEST_REDIS_URL, migrated_database
from tests.scratch import redis_prefix as scratch_redis_prefix

TEST_SECRET = "test-secret-key-" + "x" * 32  # the root conftest's value
KEYED_FAKE_KEY = "sk-the-one-right-key"
CLI = str(Path(sys.executable).with_name("aichat-gateway"))
START_TIMEOUT = 30.0
USAGE_DRAIN_SECONDS = 2.0  # the session gateways' GATEWAY_USAGE_DRAIN_SECONDS

# The fake upstream's reply with its default 16 chunks: "fake reply word1 ... word14".
FAKE_WORDS = ["fake", "reply", *[f"word{i}" for i in range(1, 15)]]
FAKE_REPLY = " ".join(FAKE_WORDS)
PASSWORD_SELLER = "seller-pass-" + secrets.token_hex(8)
PASSWORD_BUYER = "buyer-pass-" + secrets.token_hex(8)
EXPLICIT_PRICE = {"input_usd_per_million": "1", "output_usd_per_million": "2"}
PRICE_CHEAP = {"input_usd_per_million": "0.5", "output_usd_per_million": "1"}
PRICE_DEAR = {"input_usd_per_million": "5", "output_usd_per_million": "10"}


# The root conftest is imported as the module `conftest` too, and pytest replaces that module when it
# loads this file, so tests in this folder doing `from conftest import unique_email` get this module:
# it must keep offering what they import from the root one.
def unique_email(tag: str = "user") -> str:
    """As the root conftest's helper."""
    return f"{tag}-{uuid.uuid4().hex[:10]}@example.com"


def wait_until(predicate: Any, within: float, what: str, interval: float = 0.02) -> Any:
    """Poll `predicate()` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        time.sleep(interval)


async def await_until(predicate: Any, within: float, what: str, interval: float = 0.02) -> Any:
    """Async version of `wait_until`; `predicate` may be a coroutine function."""
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        await asyncio.sleep(interval)


# ---- processes -----------------------------------------------------------------------------------


@dataclass
class Proc:
    """One subprocess on 127.0.0.1:port, logging stdout and stderr to `log_path`."""

    name: str
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_healthy(self, within: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + within
        while True:
            if not self.alive():
                raise AssertionError(f"{self.name} exited with {self.popen.returncode}:\n{self.logs()[-4000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not healthy after {within}s:\n{self.logs()[-4000:]}")
            time.sleep(0.05)


class Processes:
    """Starts processes and owns them: `close()` ends every one it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Proc] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Proc:
        log_path = self.log_dir / f"{name}-{port}.log"
        with log_path.open("wb") as log_file:
            popen = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        proc = Proc(name, popen, port, log_path)
        self.started.append(proc)
        return proc

    def close(self, only: list[Proc] | None = None) -> None:
        """Kill (SIGKILL: nothing to wait for at teardown) every process started, or only these."""
        chosen = self.started if only is None else only
        for proc in chosen:
            if proc.alive():
                with contextlib.suppress(ProcessLookupError):
                    proc.popen.kill()
        for proc in chosen:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)


def _base_env() -> dict[str, str]:
    """The test runner's environment without anything that would steer the children elsewhere."""
    drop = ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "GATEWAY_CONFIG_FILE")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    owner = Processes(tmp_path_factory.mktemp("proxy-processes"))
    try:
        yield owner
    finally:
        owner.close()


# ---- fake upstreams -------------------------------------------------------------------------------


class FakeUpstream(Proc):
    """A fake provider process; `stats()`/`reset()` read and clear its `/_fake/stats` counters."""

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.url + "/_fake/stats", timeout=5).json()
        return answer

    def reset(self) -> None:
        httpx.post(self.url + "/_fake/reset", timeout=5).raise_for_status()

    def last_body(self) -> dict[str, Any]:
        last = self.stats()["last_request"]
        assert last is not None, f"{self.name} has seen no request"
        body: dict[str, Any] = last["body"]
        return body

    async def astats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            answer: dict[str, Any] = (await client.get(self.url + "/_fake/stats")).json()
            return answer

    async def wait_for_stat(self, key: str, value: int, within: float) -> dict[str, Any]:
        """Poll the stats until stats[key] == value; fail after `within` seconds."""
        last: dict[str, Any] = {}

        async def check() -> bool:
            nonlocal last
            last = await self.astats()
            return bool(last[key] == value)

        deadline = time.monotonic() + within
        while not await check():
            assert time.monotonic() < deadline, f"{self.name}: {key} stayed {last[key]}, wanted {value}: {last}"
            await asyncio.sleep(0.02)
        return last


def spawn_fake(processes: Processes, name: str, *options: str) -> FakeUpstream:
    port = free_port()
    argv = [CLI, "fake-upstream", "--host", "127.0.0.1", "--port", str(port), *options]
    proc = processes.spawn(name, argv, _base_env(), port)
    return FakeUpstream(proc.name, proc.popen, proc.port, proc.log_path)


@dataclass(frozen=True)
class Fakes:
    main: FakeUpstream  # default behaviour: 16 words, usage reported, no pacing
    failing: FakeUpstream  # every /v1 request answers 500
    busy: FakeUpstream  # every /v1 request answers 429 with Retry-After: 7
    keyed: FakeUpstream  # accepts only `Authorization: Bearer sk-the-one-right-key`
    sleepy: FakeUpstream  # waits 3 s before answering
    slow: FakeUpstream  # a paced stream: 20 chunks, 100 ms apart (about 2 s in all)
    paced: FakeUpstream  # a long paced stream: 50 chunks, 200 ms apart (10 s if read to the end)
    hanging: FakeUpstream  # waits 10 s before its first byte; only the before-the-first-byte test uses it
    stalling: FakeUpstream  # 3 chunks 1.5 s apart: the strict gateway's 0.5 s read timeout hits mid-stream
    reasoning: FakeUpstream  # 4 words, then 0.4 s later the usage: 4 + 4,994 reasoning completion tokens


@pytest.fixture(scope="session")
def fakes(processes: Processes) -> Fakes:
    """All fake upstreams of the session, started side by side."""
    started = Fakes(
        main=spawn_fake(processes, "fake-main"),
        failing=spawn_fake(processes, "fake-failing", "--error-rate", "1", "--error-status", "500"),
        keyed=spawn_fake(processes, "fake-keyed", "--require-key", KEYED_FAKE_KEY),
        busy=spawn_fake(processes, "fake-busy", "--error-rate", "1", "--error-status", "429", "--retry-after", "7"),
        sleepy=spawn_fake(processes, "fake-sleepy", "--latency-ms", "3000"),
        slow=spawn_fake(processes, "fake-slow", "--chunks", "20", "--chunk-interval-ms", "100"),
        paced=spawn_fake(processes, "fake-paced", "--chunks", "50", "--chunk-interval-ms", "200"),
        hanging=spawn_fake(processes, "fake-hanging", "--latency-ms", "10000"),
        stalling=spawn_fake(processes, "fake-stalling", "--chunks", "3", "--chunk-interval-ms", "1500"),
        reasoning=spawn_fake(
            processes, "fake-reasoning", "--chunks", "4", "--usage-delay-ms", "400", "--reasoning-tokens", "4994"
        ),
    )
    for fake in vars(started).values():
        fake.wait_healthy()
    return started


@pytest.fixture(scope="session")
def fake_upstream(fakes: Fakes) -> FakeUpstream:
    """The well-behaved fake provider; `.base_url` is `http://127.0.0.1:P/v1`."""
    return fakes.main


# ---- gateways -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def proxy_database_url() -> Iterator[str]:
    """A migrated database of the proxy tests' own, dropped at the end."""
    with migrated_database("test_proxy") as dsn:
        yield dsn


@pytest.fixture(scope="session")
def proxy_redis_prefix() -> Iterator[str]:
    """A Redis key prefix of the proxy tests' own; its keys are deleted at the end."""
    with scratch_redis_prefix("tp") as prefix:
        yield prefix


@pytest.fixture(scope="session")
def proxy_settings(proxy_database_url: str, proxy_redis_prefix: str) -> Settings:
    """What the `settings` fixture holds, on the proxy tests' own database and Redis prefix."""
    return load_settings(
        DATABASE_URL=proxy_database_url,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY=TEST_SECRET,
        GATEWAY_REDIS_PREFIX=proxy_redis_prefix,
        GATEWAY_ALLOW_PRIVATE_UPSTREAMS=True,
        GATEWAY_LOG_JSON=True,
        GATEWAY_WORKER_IN_SERVE=False,  # as the root conftest's: no job worker in test apps
    )


@pytest.fixture(scope="session", autouse=True)
def ledger_invariants_hold_after_the_session(proxy_settings: Settings) -> Iterator[None]:
    """DESIGN.md: the ledger invariants are checked after the integration tests. Whatever the
    gateways recorded is settled first (a worker of our own drains the stream), then audited."""
    yield

    async def settle_and_audit() -> list[str]:
        db = await asyncpg.create_pool(proxy_settings.database_url, min_size=1, max_size=4)
        redis = Redis.from_url(proxy_settings.redis_url)
        try:
            hot = HotBalances(redis, proxy_settings.redis_prefix)
            worker = Settler(
                db,
                redis,
                proxy_settings.redis_prefix,
                proxy_settings.platform_fee,
                after_commit=hot.applied,
                consumer="test-session-end",
                block_ms=10,
                claim_idle_ms=0,
            )
            while await worker.run_once():
                pass
            async with db.acquire() as conn:
                return [f"{b.invariant}: {b.detail}" for b in await audit(conn)]
        finally:
            await redis.aclose()
            await db.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker_thread:
        breaches = worker_thread.submit(asyncio.run, settle_and_audit()).result()
    assert breaches == [], "ledger invariants broken after the integration tests:\n" + "\n".join(breaches)


@dataclass
class GatewayFactory:
    """Starts `aichat-gateway serve` processes with the session's settings plus per-gateway overrides."""

    processes: Processes
    settings: Settings
    gateways: list[Proc] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        s = self.settings
        env = _base_env()
        env.update(
            {
                "DATABASE_URL": s.database_url,
                "REDIS_URL": s.redis_url,
                "GATEWAY_SECRET_KEY": s.secret_key.get_secret_value(),
                "GATEWAY_REDIS_PREFIX": s.redis_prefix,
                "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "1",
                "GATEWAY_LOG_JSON": "1",
                "GATEWAY_LOG_LEVEL": "info",
                # The seeded market lists deliberately broken upstreams; test_proxy_keycheck.py
                # starts a gateway that checks keys.
                "GATEWAY_CHECK_LISTING_KEYS": "0",
                # Deliberately failing listings must keep answering 502 here; the breaker has
                # its own gateway in test_proxy_breaker.py.
                "GATEWAY_BREAKER_FAIL_MAX": "1000000",
                # A buyer who leaves mid-stream: the provider is read on for its usage this long.
                "GATEWAY_USAGE_DRAIN_SECONDS": str(USAGE_DRAIN_SECONDS),
            }
        )
        env.update(overrides)
        return env

    def spawn(self, name: str, **overrides: str) -> Proc:
        port = free_port()
        argv = [CLI, "serve", "--host", "127.0.0.1", "--port", str(port)]
        proc = self.processes.spawn(name, argv, self.env(**overrides), port)
        self.gateways.append(proc)
        return proc

    def start(self, name: str, **overrides: str) -> Proc:
        proc = self.spawn(name, **overrides)
        proc.wait_healthy()
        return proc


@pytest.fixture(scope="session")
def gateway_factory(processes: Processes, proxy_settings: Settings) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(processes, proxy_settings)
    try:
        yield factory
    finally:
        # Before the session's database and Redis keys are dropped (this fixture depends on them).
        processes.close(only=factory.gateways)


@dataclass(frozen=True)
class Gateways:
    a: Proc  # the default gateway; the marketplace is seeded through it
    b: Proc  # a second process on the same Postgres and Redis (revocation across processes)
    strict: Proc  # GATEWAY_MAX_BODY_BYTES=4096 and GATEWAY_UPSTREAM_READ_TIMEOUT=0.5


@pytest.fixture(scope="session")
def gateways(gateway_factory: GatewayFactory) -> Gateways:
    """The session's gateways, started side by side (each takes about a second to import)."""
    started = Gateways(
        a=gateway_factory.spawn("gateway-a", GATEWAY_LOG_LEVEL="debug"),  # the secrets test reads it
        b=gateway_factory.spawn("gateway-b"),
        strict=gateway_factory.spawn(
            "gateway-strict", GATEWAY_MAX_BODY_BYTES="4096", GATEWAY_UPSTREAM_READ_TIMEOUT="0.5"
        ),
    )
    for proc in (started.a, started.b, started.strict):
        proc.wait_healthy()
    return started


@pytest.fixture(scope="session")
def gateway(gateways: Gateways) -> Proc:
    return gateways.a


# ---- the marketplace, seeded over HTTP ------------------------------------------------------------


@dataclass
class Account:
    id: str
    email: str
    password: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Market:
    seller: Account
    buyer: Account
    buyer_key: str  # the buyer's gateway key secret (shown once, at creation)
    buyer_key_id: str
    listings: dict[str, dict[str, Any]]  # name -> the create answer
    provider_keys: dict[str, str]  # name -> the seller's provider key for that listing
    models: list[str]  # every model the listings serve
    created_key_secrets: list[str] = field(default_factory=list)

    def new_key(self, gateway: Proc, name: str = "extra") -> tuple[str, str]:
        """A fresh gateway key for the buyer: (key id, secret)."""
        answer = httpx.post(gateway.url + "/api/keys", json={"name": name}, headers=self.buyer.auth, timeout=10)
        assert answer.status_code == 201, answer.text
        body = answer.json()
        self.created_key_secrets.append(body["key"])
        return body["id"], body["key"]

    def revoke(self, gateway: Proc, key_id: str) -> httpx.Response:
        return httpx.delete(f"{gateway.url}/api/keys/{key_id}", headers=self.buyer.auth, timeout=10)


def register_and_login(gateway: Proc, tag: str, password: str) -> Account:
    email = unique_email(tag)
    registered = httpx.post(gateway.url + "/api/auth/register", json={"email": email, "password": password}, timeout=10)
    assert registered.status_code == 201, registered.text
    login = httpx.post(gateway.url + "/api/auth/login", json={"email": email, "password": password}, timeout=10)
    assert login.status_code == 200, login.text
    return Account(registered.json()["id"], email, password, login.json()["access_token"])


BUYER_FUNDS_USD = "1000"


def fund(settings: Settings, user_id: str, amount_usd: str) -> None:
    """Promotional credit, exactly as an admin grants it: Postgres first, then the hot view."""

    async def grant() -> None:
        db = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        redis = Redis.from_url(settings.redis_url)
        try:
            await grant_credit(
                db,
                user_id=user_id,
                amount_micro=parse_usd(amount_usd),
                reason="test funds",
                granted_by=None,
                idempotency_key=None,
                on_balance_change=HotBalances(redis, settings.redis_prefix).credit,
            )
        finally:
            await redis.aclose()
            await db.close()

    # Its own loop on a worker thread: callable from sync fixtures and async tests alike.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        worker.submit(asyncio.run, grant()).result()


def create_listing(gateway: Proc, seller: Account, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(gateway.url + "/api/marketplace/listings", json=body, headers=seller.auth, timeout=10)
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


def provider_key() -> str:
    return "sk-test-seller-" + secrets.token_hex(16)


def wait_for_models(gateway: Proc, key: str, models: list[str], within: float = 10.0) -> None:
    """Poll /v1/models until every model shows (a gateway may have started before the listing)."""

    def listed() -> bool:
        answer = httpx.get(gateway.base_url + "/models", headers={"Authorization": f"Bearer {key}"}, timeout=5)
        assert answer.status_code == 200, answer.text
        return set(models) <= {m["id"] for m in answer.json()["data"]}

    wait_until(listed, within, f"{models} on {gateway.name}", interval=0.05)


def serving(model: str, price: dict[str, str] = EXPLICIT_PRICE) -> tuple[list[dict[str, str]], dict[str, str]]:
    """One model outside the catalog (so it needs explicit prices), sent upstream as gpt-4o-mini."""
    return [{"model": model, "upstream_model": "gpt-4o-mini"}], price


@pytest.fixture(scope="session")
def market(gateways: Gateways, fakes: Fakes, proxy_settings: Settings) -> Market:
    a = gateways.a
    seller = register_and_login(a, "seller", PASSWORD_SELLER)
    buyer = register_and_login(a, "buyer", PASSWORD_BUYER)
    fund(proxy_settings, buyer.id, BUYER_FUNDS_USD)
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there: connect errors
    cheap, dear = PRICE_CHEAP, PRICE_DEAR
    # name -> (base URL, (models, pricing)). Each listing gets its own provider key.
    specs: dict[str, tuple[str, tuple[list[dict[str, str]], dict[str, str]]]] = {
        "main": (
            fakes.main.base_url,
            (
                [
                    {"model": "gpt-4o-mini"},
                    {"model": "gpt-4o", "upstream_model": "gpt-4o-2024-08-06"},
                    {"model": "text-embedding-3-small"},
                ],
                {"multiplier": "1"},
            ),
        ),
        "failing": (fakes.failing.base_url, serving("failing-model")),
        "busy": (fakes.busy.base_url, serving("busy-model")),
        "sleepy": (fakes.sleepy.base_url, serving("sleepy-model")),
        "slow": (fakes.slow.base_url, serving("slow-model")),
        "paced": (fakes.paced.base_url, serving("paced-model")),
        "hanging": (fakes.hanging.base_url, serving("hanging-model")),
        "stalling": (fakes.stalling.base_url, serving("stalling-model")),
        "reasoning": (fakes.reasoning.base_url, serving("reasoning-model")),
        "dead": (dead, serving("dead-model")),
        # Two models served twice: the cheaper listing (tried first) fails, the dearer one answers.
        "failover-500-bad": (fakes.failing.base_url, serving("failover-500-model", cheap)),
        "failover-500-good": (fakes.main.base_url, serving("failover-500-model", dear)),
        "failover-dead-bad": (dead, serving("failover-dead-model", cheap)),
        "failover-dead-good": (fakes.main.base_url, serving("failover-dead-model", dear)),
        # The cheap listing's key is one the keyed fake rejects (key checks are off here).
        "invalid-key-bad": (fakes.keyed.base_url, serving("invalid-key-model", cheap)),
        "invalid-key-good": (fakes.main.base_url, serving("invalid-key-model", dear)),
    }
    listings: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}
    models: set[str] = set()
    # Anthropic listings: the fake's Messages API, listed at its root URL as a seller of
    # api.anthropic.com would list that.
    providers = {"anthropic": "anthropic"}
    specs["anthropic"] = (fakes.main.url, ([{"model": "claude-3-5-haiku"}], {"multiplier": "1"}))
    for name, (base_url, (served, pricing)) in specs.items():
        keys[name] = provider_key()
        listings[name] = create_listing(
            a,
            seller,
            {
                "name": f"proxy tests: {name}",
                "provider": providers.get(name, "openai"),
                "base_url": base_url,
                "api_key": keys[name],
                "models": served,
                "pricing": pricing,
                "attest_resale": True,
            },
        )
        models |= {m["model"] for m in served}
    created = httpx.post(a.url + "/api/keys", json={"name": "proxy-tests"}, headers=buyer.auth, timeout=10)
    assert created.status_code == 201, created.text
    market = Market(
        seller=seller,
        buyer=buyer,
        buyer_key=created.json()["key"],
        buyer_key_id=created.json()["id"],
        listings=listings,
        provider_keys=keys,
        models=sorted(models),
    )
    # Every gateway was started before these listings existed: each must pick them up (pub/sub or poll).
    for proc in (gateways.a, gateways.b, gateways.strict):
        wait_for_models(proc, market.buyer_key, market.models)
    return market


# ---- the usage stream -----------------------------------------------------------------------------


class UsageEvents:
    """Reads `<prefix>:usage` (the Redis Stream the meter appends to)."""

    def __init__(self, client: redis_sync.Redis, prefix: str) -> None:
        self.client = client
        self.stream = f"{prefix}:usage"

    def for_request(self, request_id: str) -> list[dict[str, str]]:
        entries = self.client.xrange(self.stream)
        found = []
        for _, fields in entries:
            decoded = decode_entry(fields)
            booked = decoded.get("request_id", "")
            # A request id the client chose is booked with a unique suffix (edge.charge_id).
            if booked == request_id or booked.rsplit(".", 1)[0] == request_id:
                found.append(decoded)
        return found

    async def wait_for(self, request_id: str, within: float = 5.0) -> list[dict[str, str]]:
        """The events of one request, once at least one is there."""
        found: list[dict[str, str]] = []

        def check() -> bool:
            nonlocal found
            found = self.for_request(request_id)
            return bool(found)

        await await_until(check, within, f"a usage event for {request_id}")
        return found


@pytest.fixture(scope="session")
def usage_events(proxy_settings: Settings) -> Iterator[UsageEvents]:
    client = redis_sync.Redis.from_url(proxy_settings.redis_url)
    try:
        yield UsageEvents(client, proxy_settings.redis_prefix)
    finally:
        client.close()


async def read_then_leave(gateway: Proc, key: str, model: str, events: int, rid: str | None = None) -> list[str]:
    """Read `events` SSE data lines of a stream, then close the connection."""
    headers = {"Authorization": f"Bearer {key}", **({"x-request-id": rid} if rid else {})}
    got: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        body = {"model": model, "messages": [{"role": "user", "content": "tell me a long story"}], "stream": True}
        async with client.stream("POST", gateway.base_url + "/chat/completions", json=body, headers=headers) as answer:
            assert answer.status_code == 200
            async for line in answer.aiter_lines():
                if line.startswith("data:"):
                    got.append(line)
                    if len(got) == events:
                        break
    return got


def request_id() -> str:
    """A sane request id for the caller to send (the gateway echoes it)."""
    return f"test-{uuid.uuid4().hex}"


def assert_openai_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The response is `{"error": {"message", "type", "param", "code"}}` with this status (and code/param)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if code is not None:
        assert error["code"] == code, error
    assert error["param"] == param, error
    assert response.headers.get("x-request-id"), "every response carries x-request-id"
    return error
