"""CPU instructions per request of one gateway worker, counted by valgrind's callgrind.

Why: on a shared 2-core VM, requests/s and CPU seconds move 20-30 % between identical runs, too
much to tell whether a change to the hot path helped. Instructions are counted, not timed: the
same code gave the same count to within about 1 % whatever else the machine was doing, until the
Redis multiplexer began deciding per batch whether to wait for the end of the loop turn (a
timing-dependent choice): json runs of today's code spread over 1.77-1.88 M, so trust differences
of several percent, not less. Kernel work (system calls, loopback TCP) is not counted at all: for
a change that saves system calls, use compare.py (CPU time per request, user + system).

    .venv/bin/python loadtests/instructions.py [--requests 200] [--stream] [--settle]

One fake upstream, one gateway worker under callgrind with instrumentation off; after a warm-up
of 50 requests, instrumentation goes on for N sequential requests (the same body as bench.py's
chat.lua), then off; the total over N is the figure. By default settlement runs elsewhere
(GATEWAY_SETTLE_IN_SERVE=0) so the figure is the request path alone; `--settle` includes the
worker's share of settling (sequential requests make small batches, so this overstates it).
Needs valgrind (Debian: apt-get install valgrind). Takes about a minute.
"""

from __future__ import annotations

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import (
    ENV_DEFAULTS,
    GATEWAY_CLI,
    PYTHON,
    Children,
    free_port,
    seed_demo,
    wait_healthy,
)

BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello to the benchmark, please."}],
    "max_tokens": 64,
}
WARMUP = 50


def drive(port: int, api_key: str, requests: int, stream: bool) -> None:
    """Sequential requests on one keep-alive connection; any non-200 stops the run."""
    body = json.dumps({**BODY, "stream": stream})
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(requests):
            conn.request("POST", "/v1/chat/completions", body, headers)
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise SystemExit(f"gateway answered {response.status}: {data[:300]!r}")
    finally:
        conn.close()


def callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--settle", action="store_true", help="settle inside the worker (GATEWAY_SETTLE_IN_SERVE=1)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is missing: apt-get install -y valgrind")
    env = {**ENV_DEFAULTS, **os.environ, "GATEWAY_SETTLE_IN_SERVE": "1" if args.settle else "0"}
    children = Children()
    with tempfile.TemporaryDirectory(prefix="callgrind-") as out_dir:
        try:
            fake_port, port = free_port(), free_port()
            fake_args = ["-m", "aichat_gateway.fakeupstream", "--port", str(fake_port), "--chunks", "16"]
            fake = children.start([PYTHON, *fake_args], env)
            wait_healthy(f"http://127.0.0.1:{fake_port}/healthz", fake)
            api_key = seed_demo(f"http://127.0.0.1:{fake_port}", env)["api_key"]
            valgrind = ["valgrind", "-q", "--tool=callgrind", "--instr-atstart=no"]
            valgrind.append(f"--callgrind-out-file={out_dir}/callgrind.out.%p")
            serve = [PYTHON, GATEWAY_CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
            gateway = children.start([*valgrind, *serve], {**env, "GATEWAY_LOG_LEVEL": "warning"})
            wait_healthy(f"http://127.0.0.1:{port}/healthz", gateway, within=300)
            drive(port, api_key, WARMUP, args.stream)
            callgrind_control("--instr=on", str(gateway.pid))
            drive(port, api_key, args.requests, args.stream)
            callgrind_control("--instr=off", str(gateway.pid))
            callgrind_control("--dump", str(gateway.pid))
        finally:
            children.close()
        total = 0
        for path in glob.glob(f"{out_dir}/callgrind.out.*"):
            match = re.search(r"^totals:\s*(\d+)", Path(path).read_text(errors="replace"), re.MULTILINE)
            total += int(match.group(1)) if match else 0
    mode = "stream" if args.stream else "json"
    settle = "with settlement" if args.settle else "settlement elsewhere"
    print(f"{mode}, {settle}: {total / args.requests:,.0f} instructions per request ({total:,} over {args.requests})")
    return 0 if total else 1


if __name__ == "__main__":
    sys.exit(main())
