"""Side-by-side benchmark: the fake upstream called directly vs. through the gateway, measured with wrk.

Why: the gateway's cost is what it adds on top of its upstream, so both are measured in one run, on the
same machine, with the same load: target {direct, gateway} x mode {json, stream of 16 chunks} x
connections {1, 50}; requests/s, p50 and p99 (wrk --latency, 2 threads, warm-up first).

    .venv/bin/python loadtests/bench.py [--direct-only]      (make bench)

BENCH_DURATION (default 10s) and BENCH_WARMUP (default 2s) set the wrk durations. The gateway needs
DATABASE_URL, REDIS_URL, GATEWAY_SECRET_KEY (defaults below) and is seeded with `aichat-gateway demo`.
Every child runs in its own process group, killed at exit, on errors and on Ctrl-C.
Results go to loadtests/results/bench-<timestamp>.json. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
GATEWAY_CLI = str(VENV_BIN / "aichat-gateway")
ENV_DEFAULTS = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/aichat_bench",
    "REDIS_URL": "redis://127.0.0.1:6379/15",
    "GATEWAY_SECRET_KEY": "bench-only-secret-0123456789abcdef0123456789abcdef",
    "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "1",
}
CHUNKS = 16
MODES = ("json", "stream")
CONNECTIONS = (1, 50)


@dataclass
class Target:
    name: str
    base_url: str  # ends with /v1
    api_key: str
    model: str


@dataclass
class Result:
    target: str
    mode: str
    connections: int
    wrk_threads: int
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: dict[str, int]


class Children:
    """Child processes, each the leader of its own process group, all killed by close()."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(args, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for sig, grace in ((signal.SIGTERM, 8.0), (signal.SIGKILL, 2.0)):
            alive = [p for p in self.procs if p.poll() is None]
            for proc in alive:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            for proc in alive:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not become healthy within {within:.0f}s")


def check_target(target: Target, stream: bool) -> None:
    """One request by hand, so that a broken setup fails loudly instead of benchmarking error pages."""
    body = {"model": target.model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    request = urllib.request.Request(
        target.base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {target.api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as err:
        raise SystemExit(f"{target.name}: HTTP {err.code}: {err.read().decode()[:500]}") from None
    expected = "data: [DONE]" if stream else '"chat.completion"'
    if expected not in text:
        raise SystemExit(f"{target.name}: unexpected answer: {text[:500]}")


def run_wrk(target: Target, mode: str, connections: int, duration: str) -> dict[str, Any]:
    env = {**os.environ, "BENCH_API_KEY": target.api_key, "BENCH_MODEL": target.model}
    env["BENCH_STREAM"] = "1" if mode == "stream" else "0"
    args = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{duration}", "--latency"]
    args += ["--timeout", "10s", "-s", str(HERE / "chat.lua"), target.base_url + "/chat/completions"]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            parsed: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            return parsed
    raise SystemExit(f"wrk failed ({out.returncode}): {out.stdout}\n{out.stderr}")


def measure(target: Target, mode: str, connections: int, duration: str, warmup: str) -> Result:
    run_wrk(target, mode, connections, warmup)
    raw = run_wrk(target, mode, connections, duration)
    return Result(
        target=target.name,
        mode=mode,
        connections=connections,
        wrk_threads=min(2, connections),  # wrk needs connections >= threads
        requests=raw["requests"],
        rps=raw["requests"] / (raw["duration_us"] / 1e6),
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors={k: v for k, v in raw["errors"].items() if v},
    )


def run(args: list[str], env: dict[str, str]) -> str:
    """Run a setup command to its end; its stdout, or exit with its stderr."""
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done.stdout


def ensure_database(database_url: str, env: dict[str, str]) -> None:
    url = urlsplit(database_url)
    args = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    env = {**env, **({"PGPASSWORD": url.password} if url.password else {})}
    if url.path.lstrip("/") not in run(["psql", *args, "-Atqc", "SELECT datname FROM pg_database"], env).split():
        run(["createdb", *args, url.path.lstrip("/")], env)


def seed_demo(fake_url: str, env: dict[str, str]) -> dict[str, Any]:
    """The bench database migrated and the demo seeded on `fake_url`; what `demo --json` printed.
    Shared by bench.py, memory.py and instructions.py."""
    ensure_database(env["DATABASE_URL"], env)
    if env["REDIS_URL"] == ENV_DEFAULTS["REDIS_URL"]:
        # The bench's own Redis database: start clean, so breakers opened when the previous run's
        # fake upstream was killed (and its usage events) do not carry over.
        run(["redis-cli", "-u", env["REDIS_URL"], "FLUSHDB"], env)
    run([GATEWAY_CLI, "migrate"], env)
    # $1,000: enough for every request of a run (a 5-minute soak on one worker spends tens of
    # dollars at the fake's prices); a buyer out of money would measure 402 refusals.
    demo = run([GATEWAY_CLI, "demo", "--upstream-url", fake_url + "/v1", "--json", "--funds", "1000"], env)
    seeded: dict[str, Any] = json.loads([line for line in demo.splitlines() if line.startswith("{")][-1])
    return seeded


def start_gateway(children: Children, fake_url: str, env: dict[str, str]) -> Target:
    seeded = seed_demo(fake_url, env)
    port = free_port()
    proc = children.start([GATEWAY_CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"], env)
    wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
    # demo's base_url names the gateway's default port; this run's gateway listens on `port`.
    return Target("gateway", f"http://127.0.0.1:{port}/v1", seeded["api_key"], seeded.get("model", "gpt-4o-mini"))


def ratios(results: list[Result]) -> list[dict[str, Any]]:
    """Gateway vs. direct for each mode and connection count measured on both."""
    direct = {(r.mode, r.connections): r for r in results if r.target == "direct"}
    rows = []
    for gw in (r for r in results if r.target == "gateway" and (r.mode, r.connections) in direct):
        base = direct[gw.mode, gw.connections]
        row = {"mode": gw.mode, "connections": gw.connections, "throughput_ratio": gw.rps / base.rps}
        rows.append({**row, "added_p50_ms": gw.p50_ms - base.p50_ms, "added_p99_ms": gw.p99_ms - base.p99_ms})
    return rows


def print_report(results: list[Result], ratio_rows: list[dict[str, Any]]) -> None:
    print(f"\n{'target':<8} {'mode':<7} {'conns':>5} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}  errors")
    for r in results:
        errors = ", ".join(f"{k}={v}" for k, v in r.errors.items()) or "-"
        latency = f"{r.p50_ms:>9.2f} {r.p99_ms:>9.2f}"
        print(f"{r.target:<8} {r.mode:<7} {r.connections:>5} {r.rps:>10.0f} {latency}  {errors}")
    if ratio_rows:
        print(f"\n{'gateway/direct':<14} {'conns':>5} {'throughput':>11} {'+p50 ms':>9} {'+p99 ms':>9}")
        for row in ratio_rows:
            print(
                f"{row['mode']:<14} {row['connections']:>5} {row['throughput_ratio']:>10.1%} "
                f"{row['added_p50_ms']:>9.2f} {row['added_p99_ms']:>9.2f}"
            )


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through the finally that kills the children


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--direct-only", action="store_true", help="only the fake upstream (no gateway)")
    args = parser.parse_args()
    duration, warmup = os.environ.get("BENCH_DURATION", "10s"), os.environ.get("BENCH_WARMUP", "2s")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    env = {**ENV_DEFAULTS, **os.environ}
    children = Children()
    try:
        fake_port = free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        fake_args = ["-m", "aichat_gateway.fakeupstream", "--port", str(fake_port), "--workers", "2"]
        fake = children.start([PYTHON, *fake_args, "--chunks", str(CHUNKS)], env)
        wait_healthy(fake_url + "/healthz", fake)
        targets = [Target("direct", fake_url + "/v1", "sk-bench-direct", "gpt-4o-mini")]
        if not args.direct_only:
            targets.append(start_gateway(children, fake_url, env))
        for target in targets:
            for mode in MODES:
                check_target(target, stream=mode == "stream")
        results = []
        for mode in MODES:
            for conns in CONNECTIONS:
                for target in targets:
                    print(f"wrk: {target.name} {mode} c={conns} {duration} (warm-up {warmup})", flush=True)
                    results.append(measure(target, mode, conns, duration, warmup))
        ratio_rows = ratios(results)
        print_report(results, ratio_rows)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        out = HERE / "results" / f"bench-{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        payload = {
            "timestamp": stamp,
            "duration": duration,
            "warmup": warmup,
            "chunks": CHUNKS,
            "workers": {"fake_upstream": 2, "gateway": 0 if args.direct_only else 2},
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "results": [asdict(r) for r in results],
            "ratios": ratio_rows,
        }
        out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwritten {out.relative_to(ROOT)}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        children.close()


if __name__ == "__main__":
    sys.exit(main())
