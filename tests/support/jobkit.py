"""Job-queue test kit: the real `jobs.Worker` with test tasks, in the test's process or as a
subprocess (`python -m tests.support.jobkit --dsn ... --task ...`, stopped by SIGTERM, killed by SIGKILL).

Tasks record every run they start in `job_test_runs` (task, job id, attempt, pid, period), so a test
reads from Postgres which process ran what, and when a run has started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import IO

import asyncpg

from aichat_gateway.jobs.registry import Job, JobRegistry, RetryPolicy
from aichat_gateway.jobs.worker import Worker, WorkerConfig

ROOT = Path(__file__).resolve().parents[2]  # the repository: `python -m tests.support.jobkit` runs from there
NO_DELAY = RetryPolicy(attempts=5, first_delay=timedelta(0), max_delay=timedelta(0))
# Short enough that a dead worker's job moves within about a second, long enough for a loaded machine
# to keep beating (every half of it).
FAST = WorkerConfig(poll_interval=0.2, heartbeat_timeout=1.5, grace=5.0)

RUNS_TABLE = """CREATE TABLE IF NOT EXISTS job_test_runs (
    id bigserial PRIMARY KEY,
    task text NOT NULL,
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    period timestamptz,
    at timestamptz NOT NULL DEFAULT clock_timestamp())"""


async def record_run(db: asyncpg.Pool, job: Job) -> int:
    """Record that `job` started here; returns how many runs of it have started (this one included)."""
    async with db.acquire() as conn:
        await conn.execute(
            "INSERT INTO job_test_runs (task, job_id, attempt, pid, period) VALUES ($1, $2, $3, $4, $5)",
            job.task,
            job.id,
            job.attempt,
            os.getpid(),
            job.period,
        )
        runs: int = await conn.fetchval("SELECT count(*) FROM job_test_runs WHERE job_id = $1", job.id)
    return runs


def hold_first(db: asyncpg.Pool) -> Callable[[Job], Awaitable[None]]:
    """A job's first run blocks until its worker dies or releases it; any later run completes."""

    async def handler(job: Job) -> None:
        if await record_run(db, job) == 1:
            await asyncio.Event().wait()

    return handler


def recorder(db: asyncpg.Pool) -> Callable[[Job], Awaitable[None]]:
    async def handler(job: Job) -> None:
        await record_run(db, job)

    return handler


def kit_registry(db: asyncpg.Pool, task: str, cron: str | None) -> JobRegistry:
    registry = JobRegistry()
    if cron is None:
        registry.task(task, hold_first(db), retry=NO_DELAY)
    else:
        registry.periodic(task, cron, recorder(db), retry=NO_DELAY)
    return registry


@asynccontextmanager
async def running_worker(
    dsn: str, registry: JobRegistry, config: WorkerConfig = FAST, db: asyncpg.Pool | None = None
) -> AsyncIterator[tuple[asyncio.Event, asyncio.Task[None]]]:
    """A worker in this process: (its stop event, its task); stopped (and awaited) on exit."""
    pool = db or await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(registry, pool, lambda: asyncpg.connect(dsn), config).run(stop))
    try:
        yield stop, task
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=config.grace + 15)
        finally:
            if db is None:
                await pool.close()


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 15.0, every: float = 0.05) -> None:
    """Wait until `check()` is true: looks again every `every` seconds, fails after `within`."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(every)


def spawn(
    dsn: str, task: str, log: IO[bytes], *, cron: str | None = None, grace: float = 5.0
) -> subprocess.Popen[bytes]:
    """A worker subprocess running `task` (a hold-first task, or with `cron` a periodic recorder)."""
    command = [sys.executable, "-m", "tests.support.jobkit", "--dsn", dsn, "--task", task, "--grace", str(grace)]
    if cron is not None:
        command += ["--cron", cron]
    return subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--cron")
    parser.add_argument("--grace", type=float, default=5.0)
    args = parser.parse_args()

    from aichat_gateway.config.logging import configure_logging

    configure_logging("info", json=True, stream=sys.stdout)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        db = await asyncpg.create_pool(args.dsn, min_size=1, max_size=4)
        try:
            config = WorkerConfig(FAST.poll_interval, FAST.heartbeat_timeout, args.grace)
            await Worker(kit_registry(db, args.task, args.cron), db, lambda: asyncpg.connect(args.dsn), config).run(
                stop
            )
        finally:
            await db.close()

    asyncio.run(run())


if __name__ == "__main__":
    main()
