"""`make loadtest`: the locust personas, headless, against a demo gateway started for the run.

Starts the fake upstream and a gateway (2 workers) as `make bench` does (bench.py's helpers: its own
database, migrated and seeded with `aichat-gateway demo`), seeds the rpm-limited burst listing and a
few buyer keys (seed.py), runs locust, prints the headline per request name, stops the gateway
before the fake upstream (so no request meets a dead upstream and opens a breaker that outlives the
run), then audits the ledger.

    .venv/bin/python loadtests/run_locust.py          (make loadtest)

LOCUST_USERS (50), LOCUST_SPAWN_RATE (10) and LOCUST_RUN_TIME (60s) size the run; LOADTEST_KEYS (4)
and LOADTEST_BURST_RPM (60) the seed; LOCUST_MODELS, LOCUST_BURST_MODEL and LOCUST_BURST_SIZE go to
the locustfile. The database defaults to aichat_loadtest and Redis to database 14, flushed at the
start (DATABASE_URL and REDIS_URL win; another Redis URL is not flushed); server logs go to
loadtests/results/locust-<stamp>-servers.log.
Results: loadtests/results/locust-<stamp>.html and locust-<stamp>_{stats,failures,exceptions,
stats_history}.csv. Exit status: locust's (1 if any request failed), or the audit's if that failed.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import bench

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
LOCUST = str(bench.VENV_BIN / "locust")
ENV_DEFAULTS = {
    **bench.ENV_DEFAULTS,
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/aichat_loadtest",
    "REDIS_URL": "redis://127.0.0.1:6379/14",
    "GATEWAY_LOG_LEVEL": "warning",
}
# The fake provider answers like a fast real one: 20 ms to the first byte, 32 chunks 10 ms apart
# (a stream lasts ~0.35 s), so streams overlap and hold their holds and leases for a while.
FAKE_UPSTREAM_ARGS = ["--workers", "1", "--latency-ms", "20", "--chunks", "32", "--chunk-interval-ms", "10"]
HEADLINE_COLUMNS = ("Request Count", "Failure Count", "Requests/s", "50%", "95%", "99%")


class LoggedChildren(bench.Children):
    """bench's process groups, with their output in one log file rather than in the locust report."""

    def __init__(self, log: IO[bytes]) -> None:
        super().__init__()
        self.log = log

    def start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, env=env, start_new_session=True, stdout=self.log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc


def headline(stats_csv: Path) -> str:
    """One line per request name (and the aggregate): counts, requests/s, p50/p95/p99 in ms."""
    with stats_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    width = max([len(r["Name"]) for r in rows] + [10])
    lines = [f"{'name':<{width}} {'requests':>9} {'failures':>9} {'req/s':>8} {'p50':>6} {'p95':>6} {'p99':>6}"]
    for row in rows:
        count, failures, rps, p50, p95, p99 = (row[c] for c in HEADLINE_COLUMNS)
        name = row["Name"] if row["Name"] != "Aggregated" else "all"
        lines.append(f"{name:<{width}} {count:>9} {failures:>9} {float(rps):>8.1f} {p50:>6} {p95:>6} {p99:>6}")
    return "\n".join(lines)


def locust_args(prefix: Path, env: dict[str, str]) -> list[str]:
    args = [LOCUST, "-f", str(HERE / "locustfile.py"), "--headless", "--only-summary"]
    args += ["-u", env.get("LOCUST_USERS", "50"), "-r", env.get("LOCUST_SPAWN_RATE", "10")]
    args += ["-t", env.get("LOCUST_RUN_TIME", "60s"), "--stop-timeout", "15s"]
    return [*args, "--html", f"{prefix}.html", "--csv", str(prefix)]


@dataclass(frozen=True)
class Seeded:
    api_keys: list[str]
    burst_model: str
    burst_rpm: int


def seed(target: bench.Target, env: dict[str, str]) -> Seeded:
    args = [bench.PYTHON, str(HERE / "seed.py"), "--gateway-url", target.base_url]
    args += ["--keys", env.get("LOADTEST_KEYS", "4"), "--burst-rpm", env.get("LOADTEST_BURST_RPM", "60")]
    answer = json.loads(bench.run(args, env).strip().splitlines()[-1])
    return Seeded([str(k) for k in answer["api_keys"]], str(answer["burst_model"]), int(answer["burst_rpm"]))


def run_load(prefix: Path, env: dict[str, str], servers: IO[bytes]) -> int:
    upstream, gateway = LoggedChildren(servers), LoggedChildren(servers)
    try:
        fake_port = bench.free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        fake_args = ["-m", "aichat_gateway.fakeupstream", "--port", str(fake_port), *FAKE_UPSTREAM_ARGS]
        bench.wait_healthy(fake_url + "/healthz", upstream.start([bench.PYTHON, *fake_args], env))
        if env["REDIS_URL"] == ENV_DEFAULTS["REDIS_URL"]:
            # The load test's own Redis database: start clean, so that a breaker opened by an earlier
            # run that went wrong does not turn this run's first requests into 503s. Hot balances are
            # rebuilt from Postgres; usage a previous gateway recorded but never settled is lost.
            bench.run(["redis-cli", "-u", env["REDIS_URL"], "FLUSHDB"], env)
        target = bench.start_gateway(gateway, fake_url, env)
        seeded = seed(target, env)
        for stream in (False, True):  # a broken setup fails here, loudly, not as a report full of errors
            bench.check_target(target, stream=stream)
        print(
            f"gateway {target.base_url}, {len(seeded.api_keys)} keys, burst model {seeded.burst_model} "
            f"at {seeded.burst_rpm} rpm; locust for {env.get('LOCUST_RUN_TIME', '60s')}",
            flush=True,
        )
        run_env = {**env, "GATEWAY_URL": target.base_url, "LOCUST_API_KEYS": ",".join(seeded.api_keys)}
        run_env["LOCUST_BURST_MODEL"] = seeded.burst_model
        return subprocess.run(locust_args(prefix, env), env=run_env, check=False).returncode
    finally:
        gateway.close()  # first: SIGTERM drains in-flight streams while their upstream still answers
        upstream.close()


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the finally that stops the servers


def main() -> int:
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    env = {**ENV_DEFAULTS, **os.environ}
    RESULTS.mkdir(exist_ok=True)
    prefix = RESULTS / f"locust-{time.strftime('%Y%m%dT%H%M%S')}"
    try:
        with open(f"{prefix}-servers.log", "ab") as servers:
            status = run_load(prefix, env, servers)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    stats = Path(f"{prefix}_stats.csv")
    if stats.exists():
        print("\n" + headline(stats) + "\n\n(ms; the stats, failures and history CSVs and the HTML report:)")
        print(f"  {prefix.relative_to(bench.ROOT)}.html, {prefix.relative_to(bench.ROOT)}_*.csv")
    print(bench.run([bench.GATEWAY_CLI, "audit"], env).strip())  # exits non-zero with its breaches
    return status


if __name__ == "__main__":
    sys.exit(main())
