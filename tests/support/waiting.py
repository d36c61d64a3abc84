"""Polling for something another process does (a gateway, a fake upstream, Redis, Postgres)."""

from __future__ import annotations

import asyncio
import time
from typing import Any


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
