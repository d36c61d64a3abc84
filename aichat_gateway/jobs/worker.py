"""The worker: runs queued jobs of the registered tasks and fires the periodic ones.

One PgQueuer `QueueManager` (dequeue with SKIP LOCKED, LISTEN for new jobs, a heartbeat per
running job) and one `SchedulerManager` (cron ticks) share one dedicated connection; handlers and
periodic firings use the pool they were given. Any number of workers, in any number of
processes, share the queue.

- Retries: a handler that raises is run again after its task's `RetryPolicy` delay (PgQueuer's
  `RetryRequested`: the row goes back to `queued` with a later `execute_after`); after the last
  attempt it stays in the queue table as `failed`, its traceback in `pgqueuer_log`.
- Dead workers: a running job's heartbeat is renewed every `heartbeat_timeout / 2`; a job whose
  heartbeat is older than `heartbeat_timeout` is picked again by any worker.
- Stopping: when `stop` is set, no new job is taken; running jobs get `grace` seconds to finish,
  then are released (cancelled and put back to `queued` for another worker). When the task
  running `run` is cancelled (the app's shutdown), running jobs are released at once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import asyncpg
import orjson
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.core.executors import AbstractEntrypointExecutor, EntrypointExecutorParameters
from pgqueuer.core.qm import QueueManager
from pgqueuer.core.sm import SchedulerManager
from pgqueuer.domain import models
from pgqueuer.domain.errors import RetryRequested

from aichat_gateway.config.logging import get_logger
from aichat_gateway.jobs.errors import BadPayload, QueueNotReady
from aichat_gateway.jobs.periods import queue_period
from aichat_gateway.jobs.queue import channel, queries_on, schema_problems
from aichat_gateway.jobs.registry import Job, JobRegistry, Periodic, Task

log = get_logger(__name__)

Connect = Callable[[], Awaitable[asyncpg.Connection]]
Sleep = Callable[[float], Awaitable[None]]

# How long released jobs and the managers get to wind down before they are abandoned (their
# heartbeats stop, so another worker takes them after `heartbeat_timeout`).
RELEASE_TIMEOUT: Final = 10.0
# A firing whose transaction failed (Postgres briefly away) is tried again after these delays.
FIRE_RETRY_DELAYS: Final = (1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    poll_interval: float = 10.0  # seconds between looks for due retries and dead workers' jobs
    heartbeat_timeout: float = 30.0
    grace: float = 30.0  # after `stop`, seconds running jobs may take to finish before release
    batch_size: int = 5


def to_job(job: models.Job) -> Job:
    try:
        payload = orjson.loads(job.payload or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadPayload(f"job {job.id}: payload is not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise BadPayload(f"job {job.id}: payload is not a JSON object")
    return Job(id=int(job.id), task=str(job.entrypoint), payload=payload, attempt=job.attempts + 1)


@dataclass
class _Running:
    """The tasks running handlers in this worker, and whether they are being released."""

    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    releasing: bool = False

    def release(self) -> None:
        self.releasing = True
        for task in list(self.tasks):
            task.cancel()


@dataclass
class _Executor(AbstractEntrypointExecutor):
    task: Task = field(kw_only=True)
    running: _Running = field(kw_only=True)

    async def execute(self, job: models.Job, context: models.Context) -> None:
        current = asyncio.current_task()
        assert current is not None  # PgQueuer runs each job in a task of its own
        self.running.tasks.add(current)
        attempt = job.attempts + 1
        try:
            await self.task.handler(to_job(job))
        except asyncio.CancelledError:
            if not self.running.releasing:
                raise  # PgQueuer cancelled it (a cancellation request): it records that
            current.uncancel()
            log.info("job_released", task=self.task.name, job_id=int(job.id), attempt=attempt)
            raise RetryRequested(delay=timedelta(0), reason="released: its worker stopped") from None
        except BadPayload as exc:
            log.error("job_failed", task=self.task.name, job_id=int(job.id), attempt=attempt, error=str(exc))
            raise
        except Exception as exc:
            delay = self.task.retry.delay_after(attempt)
            if delay is None:
                log.error("job_failed", task=self.task.name, job_id=int(job.id), attempt=attempt, error=repr(exc))
                raise  # PgQueuer keeps it as 'failed' (on_failure="hold")
            log.warning(
                "job_retry",
                task=self.task.name,
                job_id=int(job.id),
                attempt=attempt,
                retry_in=delay.total_seconds(),
                error=repr(exc),
            )
            raise RetryRequested(delay=delay, reason=repr(exc)) from exc
        finally:
            self.running.tasks.discard(current)


async def _never_called(job: models.Job) -> None:
    raise AssertionError("_Executor.execute runs the task's handler itself")


class Worker:
    def __init__(
        self,
        registry: JobRegistry,
        db: asyncpg.Pool,
        connect: Connect,
        config: WorkerConfig,
        *,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._registry = registry
        self._db = db
        self._connect = connect
        self._config = config
        self._sleep = sleep

    async def run(self, stop: asyncio.Event) -> None:
        """Run jobs until `stop` is set (graceful) or this task is cancelled (release at once).
        Raises when the queue's connection fails, so a supervisor can start it again."""
        conn = await self._connect()
        try:
            problems = await schema_problems(conn)
            if problems:
                raise QueueNotReady(
                    "the job queue's tables are missing or out of date; run `aichat-gateway migrate` "
                    f"({len(problems)} difference(s), first: {problems[0].splitlines()[0]})"
                )
            await self._run(conn, stop)
        finally:
            try:
                await conn.close(timeout=5)
            except asyncio.CancelledError:
                conn.terminate()
                raise
            except (asyncpg.PostgresError, OSError, TimeoutError):
                conn.terminate()  # broken already: nothing to close politely

    async def _run(self, conn: asyncpg.Connection, stop: asyncio.Event) -> None:
        queries = queries_on(AsyncpgDriver(conn))
        shutdown = asyncio.Event()
        running = _Running()
        qm = QueueManager(queries, channel())
        qm.shutdown = shutdown
        for task in self._registry.tasks.values():
            parameters = EntrypointExecutorParameters(
                concurrency_limit=task.concurrency, func=_never_called, accepts_context=False, on_failure="hold"
            )
            qm.register_executor(task.name, _Executor(parameters, task=task, running=running))
        managers = [
            asyncio.create_task(
                qm.run(
                    dequeue_timeout=timedelta(seconds=self._config.poll_interval),
                    batch_size=self._config.batch_size,
                    heartbeat_timeout=timedelta(seconds=self._config.heartbeat_timeout),
                ),
                name="jobs-queue",
            )
        ]
        if self._registry.periodic_tasks:
            sm = SchedulerManager(queries)
            sm.shutdown = shutdown
            for periodic in self._registry.periodic_tasks:
                sm.schedule(periodic.task, periodic.cron, accepts_context=False)(
                    functools.partial(self._fire, periodic)
                )
            managers.append(asyncio.create_task(sm.run(), name="jobs-scheduler"))
        log.info("job_worker_started", worker=str(qm.queue_manager_id), tasks=sorted(self._registry.tasks))
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait([*managers, stopping], return_when=asyncio.FIRST_COMPLETED)
            log.info("job_worker_stopping", running=len(running.tasks), grace=self._config.grace)
            await self._wind_down(shutdown, running, managers, grace=self._config.grace)
        except asyncio.CancelledError:
            # Finish releasing even if cancelled again meanwhile (the app's supervisor re-cancels).
            wind_down = asyncio.ensure_future(self._wind_down(shutdown, running, managers, grace=0))
            while not wind_down.done():
                try:
                    await asyncio.shield(wind_down)
                except asyncio.CancelledError:
                    continue
            raise
        finally:
            stopping.cancel()
        log.info("job_worker_stopped", worker=str(qm.queue_manager_id))
        for manager in managers:  # a manager that ended by itself failed: the connection, most likely
            error = None if manager.cancelled() else manager.exception()
            if error is not None:
                raise error

    @staticmethod
    async def _wind_down(
        shutdown: asyncio.Event, running: _Running, managers: list[asyncio.Task[None]], *, grace: float
    ) -> None:
        shutdown.set()  # no new jobs or firings; the managers wait for the running jobs to end
        pending = {m for m in managers if not m.done()}
        if pending and grace > 0:
            _, pending = await asyncio.wait(pending, timeout=grace)
        if not pending:
            return
        if running.tasks:
            log.info("job_worker_releasing", jobs=len(running.tasks))
        running.release()
        _, pending = await asyncio.wait(pending, timeout=RELEASE_TIMEOUT)
        for manager in pending:
            manager.cancel()
        if pending:
            await asyncio.wait(pending, timeout=RELEASE_TIMEOUT)

    async def _fire(self, periodic: Periodic, schedule: models.Schedule) -> None:
        """PgQueuer's scheduler calls this for a due tick: queue the period's job, once."""
        for delay in (*FIRE_RETRY_DELAYS, None):
            try:
                period, job_id = await queue_period(self._db, periodic)
            except (asyncpg.PostgresError, OSError) as exc:
                if delay is None:
                    log.error("periodic_task_not_queued", task=periodic.task, error=repr(exc))
                    return
                log.warning("periodic_task_queue_failed", task=periodic.task, error=repr(exc), retry_in=delay)
                await self._sleep(delay)
                continue
            if job_id is None:
                log.info("periodic_task_already_queued", task=periodic.task, period=period.isoformat())
            else:
                log.info("periodic_task_queued", task=periodic.task, period=period.isoformat(), job_id=job_id)
            return
