"""The job queue (PgQueuer, migration 0010) on a real Postgres: retries, dead workers, periodic tasks
once per period, stopping, and the worker inside `serve` and as `aichat-gateway worker`.

Workers run in this process (`tests.support.jobkit.running_worker`) or as subprocesses (`python -m
tests.support.jobkit`, the real `Worker` with test tasks; the console script for the CLI test). Intervals are
short and configured (heartbeat 1.5 s, poll 0.2 s, per-second cron): PgQueuer reads the time from
Postgres' `now()`, so it cannot be injected; tests wait for what they expect to happen, never for a
fixed time.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import orjson
import pytest
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.core.qm import QueueManager
from structlog.testing import capture_logs

from aichat_gateway.billing.jobs import PAYOUT_RUN
from aichat_gateway.config.settings import Settings, load_settings
from aichat_gateway.jobs.errors import QueueNotReady
from aichat_gateway.jobs.periods import queue_period
from aichat_gateway.jobs.queue import channel, enqueue, queries_on, schema_problems
from aichat_gateway.jobs.registry import Job, JobRegistry, Periodic, RetryPolicy
from aichat_gateway.jobs.worker import Worker, WorkerConfig
from aichat_gateway.server.app import create_app
from aichat_gateway.server.services import create_db_pool
from aichat_gateway.server.worker import APPLICATION_NAME, run_worker
from tests.support.jobkit import FAST, NO_DELAY, RUNS_TABLE, eventually, hold_first, kit_registry, running_worker, spawn
from tests.support.scratch import ADMIN_DSN, TEST_REDIS_URL, dsn_for, migrated_database

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CLI = str(Path(sys.executable).with_name("aichat-gateway"))


@pytest.fixture(scope="module")
def dsn() -> Iterator[str]:
    with migrated_database("jobs") as url:
        yield url


@pytest.fixture
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    db = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    await db.execute(RUNS_TABLE)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def task() -> str:
    """A task name of this test's own: workers only take jobs of the tasks they registered."""
    return f"test.{uuid.uuid4().hex[:12]}"


async def job_row(db: asyncpg.Pool, job_id: int) -> asyncpg.Record | None:
    return await db.fetchrow("SELECT status::text, attempts FROM pgqueuer WHERE id = $1", job_id)


async def logged(db: asyncpg.Pool, job_id: int) -> list[str]:
    rows = await db.fetch("SELECT status::text FROM pgqueuer_log WHERE job_id = $1 ORDER BY id", job_id)
    return [r["status"] for r in rows]


async def runs_of(db: asyncpg.Pool, job_id: int) -> list[asyncpg.Record]:
    return await db.fetch("SELECT attempt, pid FROM job_test_runs WHERE job_id = $1 ORDER BY id", job_id)


async def done(db: asyncpg.Pool, job_id: int) -> bool:
    return await job_row(db, job_id) is None and "successful" in await logged(db, job_id)


def start_cli(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen([CLI, *argv], stdout=log, stderr=subprocess.STDOUT, env=env)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PGQUEUER_", "DATABASE_URL"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


async def exited(proc: subprocess.Popen[bytes], within: float = 20.0) -> int:
    async with asyncio.timeout(within):
        while True:
            if (code := proc.poll()) is not None:
                return code
            await asyncio.sleep(0.05)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


# ---- the schema --------------------------------------------------------------------------------


async def test_the_migrated_schema_is_what_the_installed_pgqueuer_expects(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        assert await schema_problems(conn) == []  # PgQueuer's own upgrade planner: nothing to do
        await QueueManager(queries_on(AsyncpgDriver(conn)), channel()).verify_structure()  # raises if not
    finally:
        await conn.close()


async def test_a_worker_refuses_to_start_on_a_database_without_the_queue_tables(task: str) -> None:
    name = f"aichat_jobs_empty_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        db = await asyncpg.create_pool(dsn_for(name), min_size=1, max_size=2)
        try:
            registry = JobRegistry()
            registry.task(task, hold_first(db))
            worker = Worker(registry, db, lambda: asyncpg.connect(dsn_for(name)), FAST)
            with pytest.raises(QueueNotReady, match="aichat-gateway migrate"):
                await worker.run(asyncio.Event())
        finally:
            await db.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()


# ---- enqueueing --------------------------------------------------------------------------------


async def test_a_job_queued_in_a_transaction_that_rolls_back_is_never_queued(pool: asyncpg.Pool, task: str) -> None:
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        job_id = await enqueue(conn, task, {"n": 1})
        await transaction.rollback()
    assert job_id is not None and await job_row(pool, job_id) is None

    async with pool.acquire() as conn, conn.transaction():
        kept = await enqueue(conn, task, {"n": 2})
    assert kept is not None
    row = await job_row(pool, kept)
    assert row is not None and row["status"] == "queued"


async def test_a_job_queued_on_the_apps_pool_with_its_json_codecs_runs(dsn: str, pool: asyncpg.Pool, task: str) -> None:
    seen: list[object] = []

    async def handler(job: Job) -> None:
        seen.append(job.payload)

    registry = JobRegistry()
    registry.task(task, handler)
    app_pool = await create_db_pool(gateway_settings(dsn))  # json/jsonb decoded and encoded by orjson
    try:
        async with running_worker(dsn, registry, db=app_pool):
            job_id = await enqueue(app_pool, task, {"document": "d2", "pages": [1, 2]})
            assert job_id is not None
            await eventually(lambda: done(pool, job_id))
    finally:
        await app_pool.close()
    assert seen == [{"document": "d2", "pages": [1, 2]}]


async def test_a_job_with_the_key_of_one_still_queued_is_not_queued_again(pool: asyncpg.Pool, task: str) -> None:
    first = await enqueue(pool, task, dedupe_key=f"{task}:once")
    second = await enqueue(pool, task, dedupe_key=f"{task}:once")
    assert first is not None and second is None


# ---- retries -----------------------------------------------------------------------------------


async def test_a_job_that_raises_is_retried_and_succeeds_on_a_later_attempt(
    dsn: str, pool: asyncpg.Pool, task: str
) -> None:
    attempts: list[int] = []
    payloads: list[object] = []

    async def flaky(job: Job) -> None:
        attempts.append(job.attempt)
        payloads.append(job.payload)
        if job.attempt < 3:
            raise RuntimeError("upstream said no")

    registry = JobRegistry()
    registry.task(task, flaky, retry=NO_DELAY)
    async with running_worker(dsn, registry):
        job_id = await enqueue(pool, task, {"document": "d1"})
        assert job_id is not None
        await eventually(lambda: done(pool, job_id))

    assert attempts == [1, 2, 3]
    assert payloads == [{"document": "d1"}] * 3
    assert await logged(pool, job_id) == ["queued", "picked", "queued", "picked", "queued", "picked", "successful"]


async def test_a_job_that_keeps_failing_stays_failed_after_its_last_attempt(
    dsn: str, pool: asyncpg.Pool, task: str
) -> None:
    attempts: list[int] = []

    async def broken(job: Job) -> None:
        attempts.append(job.attempt)
        raise RuntimeError("always")

    registry = JobRegistry()
    registry.task(task, broken, retry=RetryPolicy(attempts=3, first_delay=timedelta(0), max_delay=timedelta(0)))
    async with running_worker(dsn, registry):
        job_id = await enqueue(pool, task)
        assert job_id is not None

        await eventually(lambda: _failed(pool, job_id))

    assert attempts == [1, 2, 3]
    assert await logged(pool, job_id) == ["queued", "picked", "queued", "picked", "queued", "picked", "failed"]
    tracebacks = await pool.fetch(
        "SELECT traceback->>'exception_message' AS message FROM pgqueuer_log WHERE job_id = $1 AND status = 'failed'",
        job_id,
    )
    assert [r["message"] for r in tracebacks] == ["always"]
    # Failed is final: a worker started later runs a new job of the task, never the failed one again.
    async with running_worker(dsn, registry):
        other = await enqueue(pool, task)
        assert other is not None
        await eventually(lambda: _failed(pool, other))
    assert attempts == [1, 2, 3, 1, 2, 3]
    assert await logged(pool, job_id) == ["queued", "picked", "queued", "picked", "queued", "picked", "failed"]


async def _failed(pool: asyncpg.Pool, job_id: int) -> bool:
    row = await job_row(pool, job_id)
    return row is not None and row["status"] == "failed"


# ---- dead and stopping workers -----------------------------------------------------------------


@pytest.mark.faults
async def test_a_worker_killed_mid_job_leaves_the_job_to_another_worker_which_completes_it(
    dsn: str, pool: asyncpg.Pool, task: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    with (tmp_path / "first.log").open("wb") as log:
        first = spawn(dsn, task, log)
    processes.append(first)
    job_id = await enqueue(pool, task, {"n": 1})
    assert job_id is not None

    async def running_in_first() -> bool:
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        return [r["pid"] for r in await runs_of(pool, job_id)] == [first.pid]

    await eventually(running_in_first)  # its first run blocks until its worker is gone
    async with running_worker(dsn, kit_registry(pool, task, None)):
        first.send_signal(signal.SIGKILL)
        assert await exited(first) == -signal.SIGKILL
        await eventually(lambda: done(pool, job_id))

    assert [(r["attempt"], r["pid"]) for r in await runs_of(pool, job_id)] == [(1, first.pid), (1, os.getpid())]


async def test_on_stop_a_running_job_is_left_to_finish_within_the_grace_period(
    dsn: str, pool: asyncpg.Pool, task: str
) -> None:
    started, finish = asyncio.Event(), asyncio.Event()
    finished: list[int] = []

    async def slow(job: Job) -> None:
        started.set()
        await finish.wait()
        finished.append(job.id)

    registry = JobRegistry()
    registry.task(task, slow)
    with capture_logs() as logs:
        async with running_worker(dsn, registry) as (stop, worker):
            job_id = await enqueue(pool, task)
            await started.wait()
            stop.set()

            async def stopping() -> bool:
                return any(e["event"] == "job_worker_stopping" for e in logs)

            await eventually(stopping)
            assert not worker.done()
            finish.set()
            await worker
    assert finished == [job_id]
    assert job_id is not None and await done(pool, job_id)


async def test_on_stop_a_job_still_running_after_the_grace_period_is_handed_back_for_another_worker(
    dsn: str, pool: asyncpg.Pool, task: str
) -> None:
    registry = kit_registry(pool, task, None)
    async with running_worker(dsn, registry, WorkerConfig(0.2, 1.5, grace=0.1)) as (stop, worker):
        job_id = await enqueue(pool, task)
        assert job_id is not None
        await eventually(lambda: _runs(pool, job_id, 1))
        stop.set()
        await worker
    row = await job_row(pool, job_id)
    assert row is not None and (row["status"], row["attempts"]) == ("queued", 1)

    async with running_worker(dsn, registry):
        await eventually(lambda: done(pool, job_id))
    assert [r["attempt"] for r in await runs_of(pool, job_id)] == [1, 2]


async def test_a_cancelled_worker_hands_its_running_job_back_at_once(dsn: str, pool: asyncpg.Pool, task: str) -> None:
    registry = kit_registry(pool, task, None)
    stop = asyncio.Event()
    worker = asyncio.create_task(Worker(registry, pool, lambda: asyncpg.connect(dsn), FAST).run(stop))
    job_id = await enqueue(pool, task)
    assert job_id is not None
    await eventually(lambda: _runs(pool, job_id, 1))

    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    row = await job_row(pool, job_id)
    assert row is not None and row["status"] == "queued"


async def _runs(pool: asyncpg.Pool, job_id: int, count: int) -> bool:
    return len(await runs_of(pool, job_id)) == count


@pytest.mark.faults
async def test_a_worker_whose_queue_connection_is_cut_connects_again_and_goes_on(dsn: str, pool: asyncpg.Pool) -> None:
    stop = asyncio.Event()
    runner = asyncio.create_task(run_worker(gateway_settings(dsn), stop))
    try:
        first: list[int] = []

        async def connected(other_than: list[int]) -> bool:
            pids = await pool.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
                APPLICATION_NAME,
            )
            fresh = [r["pid"] for r in pids if r["pid"] not in other_than]
            first.extend(fresh[:1] if not other_than else [])
            return bool(fresh)

        await eventually(lambda: connected([]))
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", first[0])
        await eventually(lambda: connected(first))
        job_id = await enqueue(pool, PAYOUT_RUN, {"period": "2030-01-14T06:00:00+00:00"})
        assert job_id is not None
        await eventually(lambda: done(pool, job_id))
        assert not runner.done()
    finally:
        stop.set()
        await asyncio.wait_for(runner, 30)


# ---- periodic tasks ----------------------------------------------------------------------------


async def test_a_periodic_task_runs_once_per_period_across_two_workers(
    dsn: str, pool: asyncpg.Pool, task: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    logs = [(tmp_path / f"worker{i}.log") for i in range(2)]
    for path in logs:
        with path.open("wb") as log:
            processes.append(spawn(dsn, task, log, cron="* * * * * *"))  # every second

    async def three_periods() -> bool:
        for proc, path in zip(processes, logs, strict=True):
            assert proc.poll() is None, path.read_text()
        count = await pool.fetchval("SELECT count(DISTINCT period) FROM job_test_runs WHERE task = $1", task)
        return bool(count >= 3)

    await eventually(three_periods, within=40)
    for proc in processes:
        proc.send_signal(signal.SIGTERM)
    for proc, path in zip(processes, logs, strict=True):
        assert await exited(proc) == 0, path.read_text()

    runs = await pool.fetch("SELECT period, count(*) AS n FROM job_test_runs WHERE task = $1 GROUP BY period", task)
    assert runs and all(r["n"] == 1 for r in runs), [(r["period"], r["n"]) for r in runs]
    claimed = await pool.fetch("SELECT period FROM job_periods WHERE task = $1", task)
    assert {r["period"] for r in runs} <= {r["period"] for r in claimed}
    assert await pool.fetchval("SELECT count(*) FROM pgqueuer_schedules WHERE entrypoint = $1", task) == 1


async def test_a_period_fired_twice_at_once_is_queued_once(pool: asyncpg.Pool, task: str) -> None:
    periodic = Periodic(task, "0 6 * * 1")
    first, second = await asyncio.gather(queue_period(pool, periodic), queue_period(pool, periodic))

    assert first[0] == second[0] and first[0].weekday() == 0 and first[0].hour == 6
    assert sorted([first[1] is None, second[1] is None]) == [False, True]
    assert first[0] <= datetime.now(UTC) < first[0] + timedelta(days=7)
    queued = await pool.fetch("SELECT id, payload FROM pgqueuer WHERE entrypoint = $1", task)
    assert [r["id"] for r in queued] == [first[1] or second[1]]
    assert Job(0, task, orjson.loads(queued[0]["payload"]), 1).period == first[0]


# ---- the worker in `serve` and as a command ----------------------------------------------------


def gateway_settings(dsn: str, **overrides: object) -> Settings:
    return load_settings(
        DATABASE_URL=dsn,
        REDIS_URL=TEST_REDIS_URL,
        GATEWAY_SECRET_KEY="test-secret-key-" + "x" * 32,
        GATEWAY_REDIS_PREFIX=f"jobs{uuid.uuid4().hex[:8]}",
        GATEWAY_SETTLE_IN_SERVE=False,
        GATEWAY_JOB_POLL_INTERVAL=0.2,
        **overrides,
    )


async def test_serve_runs_a_worker_that_runs_queued_jobs_such_as_the_payout_run(dsn: str, pool: asyncpg.Pool) -> None:
    settings = gateway_settings(dsn)
    app = create_app(settings, configure_logs=False)
    async with app.router.lifespan_context(app):
        assert app.state.job_worker is not None
        job_id = await enqueue(pool, PAYOUT_RUN, {"period": "2030-01-14T06:00:00+00:00"})
        assert job_id is not None
        await eventually(lambda: done(pool, job_id))
        assert await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
            APPLICATION_NAME,
        )
    # Its connection is closed with the app.
    await eventually(
        lambda: _no_worker_connection(pool),
    )


async def _no_worker_connection(pool: asyncpg.Pool) -> bool:
    count = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
        APPLICATION_NAME,
    )
    return bool(count == 0)


async def test_serve_runs_no_worker_with_GATEWAY_WORKER_IN_SERVE_0(dsn: str) -> None:
    app = create_app(gateway_settings(dsn, GATEWAY_WORKER_IN_SERVE=False), configure_logs=False)
    async with app.router.lifespan_context(app):
        assert app.state.job_worker is None


async def test_aichat_gateway_worker_starts_and_stops_cleanly_on_sigterm(
    dsn: str, pool: asyncpg.Pool, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    env = child_env(DATABASE_URL=dsn, GATEWAY_SECRET_KEY="test-secret-key-" + "x" * 32, GATEWAY_LOG_JSON="1")
    path = tmp_path / "worker.log"
    proc = start_cli(["worker"], env, path)
    processes.append(proc)

    async def started() -> bool:
        assert proc.poll() is None, path.read_text()
        return "job_worker_started" in path.read_text() and not await _no_worker_connection(pool)

    await eventually(started)
    proc.send_signal(signal.SIGTERM)
    assert await exited(proc) == 0, path.read_text()
    output = path.read_text()
    assert "job_worker_stopped" in output and "Traceback" not in output, output
    assert await _no_worker_connection(pool)
