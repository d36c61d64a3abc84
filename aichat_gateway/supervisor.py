"""Long-running tasks owned by the app (pub/sub listeners, pollers, flushers).

Each task is kept by reference, restarted with capped backoff when it fails (logged, never
swallowed silently), and cancelled and awaited at shutdown. No fire-and-forget.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aichat_gateway.config.logging import get_logger

log = get_logger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Supervisor:
    def __init__(self, sleep: Sleep = asyncio.sleep, max_backoff: float = 10.0) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._sleep = sleep
        self._max_backoff = max_backoff

    def start(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` until shutdown; if it returns or fails it is started again."""
        if name in self._tasks:
            raise ValueError(f"task {name} already running")
        self._tasks[name] = asyncio.create_task(self._keep_running(name, work), name=name)

    def every(self, name: str, interval: float, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` every `interval` seconds until shutdown."""

        async def loop() -> None:
            while True:
                await self._sleep(interval)
                await work()

        self.start(name, loop)

    async def _keep_running(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        backoff = 0.1
        while True:
            try:
                await work()
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a supervisor's job is to log and restart
                log.error("background_task_failed", task=name, error=repr(exc), retry_in=backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        pending = set(tasks)
        # Python 3.11's asyncio.wait_for (used inside redis-py) can swallow a cancel that lands as
        # its inner call completes; so cancel again until every task has really finished.
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        await asyncio.gather(*tasks, return_exceptions=True)
