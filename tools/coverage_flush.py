"""A coverage.py plugin that saves a process's coverage data every few seconds (`make test`).

coverage.py writes a process's data when the process exits through atexit, or on SIGTERM with
`[run] sigterm = true`. The gateways and fake upstreams the tests start are mostly ended with
SIGKILL (at session teardown, and on purpose by the crash tests), which leaves no moment to write
anything: without this plugin those processes would count as never having run. So every child
process measured through `[run] patch = ["subprocess"]` writes what it collected every `interval`
seconds from a daemon thread; a kill then loses at most the last interval. A write merges the
lines run since the previous one into the process's data file; it costs a busy process about
10-20 ms (mostly coverage.py listing the package's files to record the ones never run), hence an
interval of seconds, not less. The test runner itself is not killed and saves at its exit as usual.

Loaded by `[run] plugins = ["coverage_flush"]` in pyproject.toml; the Makefile puts tools/ on
PYTHONPATH so the children find it. Options: `[tool.coverage.coverage_flush] interval = <seconds>`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from typing import Any

from coverage import Coverage
from coverage.exceptions import CoverageException

DEFAULT_INTERVAL = 2.0
# How often the thread looks for the started Coverage object: the plugin is loaded before it starts.
STARTUP_POLL = 0.05


class Flusher:
    """Saves the current process's started `Coverage` every `interval` seconds until the process exits."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stopping = threading.Event()
        # coverage.py saves again at exit or on SIGTERM from the main thread: one save at a time. The
        # lock is reentrant because a SIGTERM can arrive in the main thread while it is saving.
        self.lock = threading.RLock()
        # A fork copies the lock but not this thread: a copy held by it would block the child's exit.
        os.register_at_fork(after_in_child=self._fresh_lock)

    def _fresh_lock(self) -> None:
        self.lock = threading.RLock()

    def run(self) -> None:
        cov = self._started_coverage()
        if cov is None:
            return
        self._serialize_saves(cov)
        # Registered after coverage.py's own exit handler (it registers in start()), so it runs before
        # it: no periodic save starts after the final one (the lock keeps one under way from overlapping).
        atexit.register(self.stopping.set)
        while not self.stopping.wait(self.interval):
            with contextlib.suppress(CoverageException, OSError):
                # A failed write (a full disk, say) is retried at the next interval and at exit.
                cov.save()

    def _started_coverage(self) -> Coverage | None:
        # The child's coverage starts right after loading its plugins; the bound is only a safety net
        # (the thread is a daemon either way and never holds up an exit).
        for _ in range(int(10 / STARTUP_POLL)):
            cov = Coverage.current()
            if cov is not None:
                return cov
            if self.stopping.wait(STARTUP_POLL):
                return None
        return None

    def _serialize_saves(self, cov: Coverage) -> None:
        unlocked_save = cov.save

        def save() -> None:
            with self.lock:
                unlocked_save()

        cov.save = save  # type: ignore[method-assign]


def coverage_init(reg: Any, options: dict[str, Any]) -> None:
    """coverage.py's plugin entry point: registers nothing; in a measured child, starts the saving thread."""
    # A child inherits the variable that started coverage in it (coverage's .pth hook); the test runner
    # sets it only after loading its plugins, and `coverage combine`/`report` never have it.
    if not (os.environ.get("COVERAGE_PROCESS_CONFIG") or os.environ.get("COVERAGE_PROCESS_START")):
        return
    flusher = Flusher(float(options.get("interval", DEFAULT_INTERVAL)))
    threading.Thread(target=flusher.run, name="coverage-flush", daemon=True).start()
