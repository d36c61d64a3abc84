"""Two versions of the gateway side by side, measured in alternation: is a change faster?

Why: on a shared VM one `make bench` run differs from the next by 20-30 %, more than most changes
are worth. Here both versions run at once on one fake upstream, Redis and Postgres, and wrk drives
them in alternation (ABBA order), several rounds, so a slow phase of the machine hits both alike.
Per mode and version it prints the median requests/s, p50, and the gateway's CPU time per request
(user + system of its processes, from /proc: unlike callgrind this sees system calls too).

    git worktree add /tmp/base <commit>
    .venv/bin/python loadtests/compare.py /tmp/base [--rounds 4] [--duration 6s]
        [--modes json:50,stream:50,json:1,stream:1]

The baseline runs this checkout's venv with PYTHONPATH pointing at its code (so its dependencies
must match). Needs wrk and the settings `make bench` uses (DATABASE_URL, REDIS_URL,
GATEWAY_SECRET_KEY; bench.py's defaults). Standard library only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench import ENV_DEFAULTS, GATEWAY_CLI, PYTHON, Children, Target, free_port, run_wrk, seed_demo, wait_healthy

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def process_tree(pid: int) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout.split()
    return [pid, *(int(child) for child in children)]


def cli_of(code: Path | None) -> list[str]:
    """The command line of a checkout's CLI: this one's console script, or a baseline's CLI module
    (it moved from proxy/ to server/ in issue 13, and the console script follows this checkout)."""
    if code is None:
        return [GATEWAY_CLI]
    module = "server" if (code / "aichat_gateway" / "server" / "cli.py").is_file() else "proxy"
    return [PYTHON, "-P", "-c", f"from aichat_gateway.{module}.cli import main; main()"]  # -P: not the cwd's code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("baseline", type=Path, help="a checkout of the version to compare against")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", default="6s")
    parser.add_argument("--modes", default="json:50,stream:50,json:1,stream:1")
    args = parser.parse_args()
    modes = [(mode, int(conns)) for mode, conns in (item.split(":") for item in args.modes.split(","))]
    env = {**ENV_DEFAULTS, **os.environ}
    children = Children()
    try:
        fake_port = free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        fake_args = ["-m", "aichat_gateway.fakeupstream", "--port", str(fake_port), "--workers", "2", "--chunks", "16"]
        wait_healthy(fake_url + "/healthz", children.start([PYTHON, *fake_args], env))
        api_key = seed_demo(fake_url, env)["api_key"]
        gateways: dict[str, tuple[Target, int]] = {}
        for name, code in (("baseline", args.baseline.resolve()), ("this", None)):
            port = free_port()
            run_env = {**env, "PYTHONPATH": str(code)} if code is not None else env
            serve = [*cli_of(code), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
            proc = children.start(serve, run_env)
            wait_healthy(f"http://127.0.0.1:{port}/healthz", proc)
            gateways[name] = (Target(name, f"http://127.0.0.1:{port}/v1", api_key, "gpt-4o-mini"), proc.pid)
        for mode, conns in modes:  # warm-up
            for target, _ in gateways.values():
                run_wrk(target, mode, conns, "2s")
        results: dict[tuple[str, int, str], list[tuple[float, float, float]]] = {}
        for round_no in range(args.rounds):
            order = ("baseline", "this") if round_no % 2 == 0 else ("this", "baseline")
            for mode, conns in modes:
                for name in order:
                    target, pid = gateways[name]
                    pids = process_tree(pid)
                    before = cpu_ticks(pids)
                    raw = run_wrk(target, mode, conns, args.duration)
                    used = cpu_ticks(pids) - before
                    rps = raw["requests"] / (raw["duration_us"] / 1e6)
                    cpu_us = 1e6 * used / CLOCK_TICKS / max(raw["requests"], 1)
                    results.setdefault((mode, conns, name), []).append((rps, raw["p50_us"] / 1000, cpu_us))
                    print(
                        f"round {round_no} {mode} c={conns} {name}: {rps:,.0f}/s p50 {raw['p50_us'] / 1000:.2f} ms "
                        f"gateway CPU {cpu_us:,.0f} us/request",
                        flush=True,
                    )
        print("\nmedians over", args.rounds, "rounds")
        for (mode, conns, name), runs in sorted(results.items()):
            rps = statistics.median(r[0] for r in runs)
            p50 = statistics.median(r[1] for r in runs)
            cpu = statistics.median(r[2] for r in runs)
            print(
                f"{mode:6} c={conns:<3} {name:8} {rps:8,.0f}/s  p50 {p50:6.2f} ms  gateway CPU {cpu:6,.0f} us/request"
            )
        return 0
    finally:
        children.close()


if __name__ == "__main__":
    sys.exit(main())
