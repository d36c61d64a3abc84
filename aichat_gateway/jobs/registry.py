"""What a worker can run: tasks by name, periodic tasks by cron expression, and how each retries.

The composition root makes one `JobRegistry` and hands it to each package that owns background
work (billing registers the payout run); the worker reads it. Everything here is pure data and
pure decisions: the retry delay after a failed attempt, and which period a cron tick belongs to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from croniter import croniter

from aichat_gateway.jobs.errors import InvalidJob
from aichat_gateway.jobs.queue import check_task_name

# The payload key under which a periodic task's job carries its period (ISO 8601, UTC).
PERIOD_KEY = "period"


@dataclass(frozen=True, slots=True)
class Job:
    """One run of a task as its handler sees it."""

    id: int
    task: str
    payload: Mapping[str, Any]
    attempt: int  # 1 on the first run, 2 on the first retry, ...

    @property
    def period(self) -> datetime | None:
        """For a periodic task's job: the cron tick it runs for (the same on every retry)."""
        value = self.payload.get(PERIOD_KEY)
        return datetime.fromisoformat(value) if isinstance(value, str) else None


Handler = Callable[[Job], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A failed run is tried again after `first_delay`, doubling up to `max_delay`, until `attempts`
    runs in all have failed; the job then stays in the queue as `failed` (visible, re-queueable)."""

    attempts: int = 5
    first_delay: timedelta = timedelta(seconds=10)
    max_delay: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise InvalidJob("a task needs at least one attempt")
        if self.first_delay < timedelta(0) or self.max_delay < self.first_delay:
            raise InvalidJob("retry delays must satisfy 0 <= first_delay <= max_delay")

    def delay_after(self, attempt: int) -> timedelta | None:
        """When to run again after run number `attempt` (1-based) failed; None: no more runs."""
        if attempt >= self.attempts:
            return None
        return min(self.first_delay * (1 << min(attempt - 1, 32)), self.max_delay)  # capped: no overflow


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    handler: Handler
    retry: RetryPolicy
    concurrency: int  # runs of this task at once across all workers; 0: no limit


@dataclass(frozen=True, slots=True)
class Periodic:
    task: str
    cron: str


def check_cron(expression: str) -> str:
    """A cron expression in UTC: five fields, or six with seconds last (croniter's form)."""
    if not croniter.is_valid(expression):
        raise InvalidJob(f"not a cron expression: {expression!r}")
    return expression


def period_of(expression: str, at: datetime) -> datetime:
    """The latest tick of `expression` at or before `at` (aware): the period a firing at `at` is for.
    A late firing (every worker was down at the tick) is for the latest tick it missed."""
    previous: datetime = croniter(expression, start_time=at).get_prev(datetime)
    following: datetime = croniter(expression, start_time=previous).get_next(datetime)
    return following if following <= at else previous


@dataclass
class JobRegistry:
    _tasks: dict[str, Task] = field(default_factory=dict)
    _periodic: dict[str, Periodic] = field(default_factory=dict)

    def task(self, name: str, handler: Handler, *, retry: RetryPolicy | None = None, concurrency: int = 0) -> None:
        """Register `handler` to run jobs queued under `name` (see `jobs.queue.enqueue`)."""
        check_task_name(name)
        if name in self._tasks:
            raise InvalidJob(f"task {name} is already registered")
        if concurrency < 0:
            raise InvalidJob("concurrency must be 0 (no limit) or more")
        self._tasks[name] = Task(name, handler, retry or RetryPolicy(), concurrency)

    def periodic(
        self, name: str, cron: str, handler: Handler, *, retry: RetryPolicy | None = None, concurrency: int = 1
    ) -> None:
        """Register a task that is queued once per tick of `cron` (UTC) by whichever worker's
        scheduler fires first; its job carries the tick as `Job.period` and retries like any job."""
        check_cron(cron)
        self.task(name, handler, retry=retry, concurrency=concurrency)
        self._periodic[name] = Periodic(name, cron)

    @property
    def tasks(self) -> Mapping[str, Task]:
        return MappingProxyType(self._tasks)

    @property
    def periodic_tasks(self) -> tuple[Periodic, ...]:
        return tuple(self._periodic.values())
