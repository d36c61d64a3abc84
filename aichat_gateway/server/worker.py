"""The job worker as the gateway runs it: which packages' tasks, from settings; `aichat-gateway worker`.

Composition only (the logic is in `aichat_gateway/jobs/`): each package that owns background work
registers its tasks on the one `JobRegistry` built here. `serve` runs `build_worker(...).run` under
its supervisor unless GATEWAY_WORKER_IN_SERVE=0; `aichat-gateway worker` runs `run_worker_command`.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
import time
from collections.abc import Callable

import asyncpg

from aichat_gateway.billing import jobs as billing_jobs
from aichat_gateway.billing.payouts import Payouts
from aichat_gateway.config.logging import configure_logging, get_logger
from aichat_gateway.config.settings import Settings
from aichat_gateway.jobs.errors import QueueNotReady
from aichat_gateway.jobs.registry import JobRegistry
from aichat_gateway.jobs.worker import Connect, Worker, WorkerConfig
from aichat_gateway.server.services import create_db_pool

log = get_logger(__name__)

# Shown in pg_stat_activity for the worker's own connection (LISTEN, dequeue, heartbeats).
APPLICATION_NAME = "aichat-gateway-jobs"
# `aichat-gateway worker`: after its queue connection fails (Postgres restarting), start again after
# this long, doubling up to the cap.
RESTART_BACKOFF = (0.5, 10.0)


def task_registry(settings: Settings, db: asyncpg.Pool, clock: Callable[[], float] = time.time) -> JobRegistry:
    registry = JobRegistry()
    billing_jobs.register(registry, Payouts.from_settings(db, settings, clock=clock), settings.payout_cron)
    billing_jobs.register_auto_recharge(registry, db, settings)
    return registry


def worker_config(settings: Settings) -> WorkerConfig:
    return WorkerConfig(
        poll_interval=settings.job_poll_interval,
        heartbeat_timeout=settings.job_heartbeat_timeout,
        grace=settings.shutdown_grace_seconds,
    )


def connector(settings: Settings) -> Connect:
    return functools.partial(
        asyncpg.connect, settings.database_url, server_settings={"application_name": APPLICATION_NAME}
    )


def build_worker(settings: Settings, db: asyncpg.Pool, clock: Callable[[], float] = time.time) -> Worker:
    return Worker(task_registry(settings, db, clock), db, connector(settings), worker_config(settings))


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """Run one worker until `stop`; a failed queue connection is retried with backoff meanwhile."""
    db = await create_db_pool(settings)
    try:
        worker = build_worker(settings, db)
        backoff = RESTART_BACKOFF[0]
        while not stop.is_set():
            try:
                await worker.run(stop)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                log.error("job_worker_failed", error=repr(exc), retry_in=backoff)
                try:
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                except TimeoutError:
                    backoff = min(backoff * 2, RESTART_BACKOFF[1])
            else:
                backoff = RESTART_BACKOFF[0]
    finally:
        await db.close()


def run_worker_command(settings: Settings) -> int:
    """`aichat-gateway worker`: until SIGTERM or SIGINT, then running jobs get GATEWAY_SHUTDOWN_GRACE
    seconds to finish before they are handed back to the queue."""
    configure_logging(settings.log_level, json=settings.log_json)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_worker(settings, stop)

    try:
        asyncio.run(main())
    except QueueNotReady as exc:
        print(f"aichat-gateway worker: {exc}", file=sys.stderr)
        return 1
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:  # at start; later ones are waited out
        print(f"aichat-gateway worker: cannot reach Postgres: {exc}", file=sys.stderr)
        return 1
    return 0
