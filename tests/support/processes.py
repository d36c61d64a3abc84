"""Subprocesses on 127.0.0.1 (gateways, fake upstreams) started through the public CLI, each logging
to its own file so tests can search the logs, and all of them killed by their owner at teardown."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

CLI = str(Path(sys.executable).with_name("aichat-gateway"))
START_TIMEOUT = 30.0


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


def base_env() -> dict[str, str]:
    """The test runner's environment without anything that would steer the children elsewhere."""
    drop = ("DATABASE_URL", "REDIS_URL", "PROMETHEUS_MULTIPROC_DIR", "GATEWAY_CONFIG_FILE")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env
