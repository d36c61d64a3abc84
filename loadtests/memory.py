"""Memory of one gateway worker: at idle, with 1,000 open streams, and over a soak under load.

Why: a relay's memory grows with the streams it holds open; the goal is at most 50 KiB per open
stream, and a resident size that stays flat after warm-up under steady load (no leak).

    .venv/bin/python loadtests/memory.py            (part of make bench)

One fake upstream whose streams last ten minutes (a chunk per second), one gateway worker
(`serve --workers 1`, so its process is the worker), seeded with `aichat-gateway demo`. Steps:
resident size (RSS) at idle after a warm-up; then MEMORY_STREAMS streams (default 1,000) opened at
once and each read to its first chunk, RSS again; streams closed; then MEMORY_SOAK_SECONDS (default
300) of wrk at 20 connections with RSS sampled every 10 s (flat expected after the first 70 s). Results go to
loadtests/results/memory-<timestamp>.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import aiohttp
import psutil
from bench import (
    ENV_DEFAULTS,
    GATEWAY_CLI,
    HERE,
    PYTHON,
    ROOT,
    Children,
    free_port,
    seed_demo,
    wait_healthy,
)

STREAMS = int(os.environ.get("MEMORY_STREAMS", "1000"))
SOAK_SECONDS = int(os.environ.get("MEMORY_SOAK_SECONDS", "300"))
SAMPLE_EVERY = 10
WARM_UP_SAMPLES = 7  # the first 70 s of the soak: caches, pools and the last minute's usage events
KIB = 1024


def rss(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


async def hold_streams(url: str, key: str, count: int, opened: asyncio.Event, release: asyncio.Event) -> int:
    """Open `count` streams at once, read each to its first chunk, keep them open until `release`."""
    body = {"model": "gpt-4o-mini", "stream": True, "max_tokens": 700, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {key}"}
    ready = 0

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one() -> None:
            nonlocal ready
            async with session.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as r:
                if r.status != 200:
                    raise RuntimeError(f"stream refused: {r.status} {await r.text()}")
                await r.content.readline()
                ready += 1
                if ready == count:
                    opened.set()
                await release.wait()

        await asyncio.gather(*(one() for _ in range(count)))
    return ready


async def measure_open_streams(url: str, key: str, pid: int) -> tuple[int, int]:
    opened, release = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold_streams(url, key, STREAMS, opened, release))
    await asyncio.wait_for(opened.wait(), timeout=120)
    await asyncio.sleep(2)  # let every relay settle into its steady state before sampling
    with_streams = rss(pid)
    release.set()
    return with_streams, await holder


def soak(url: str, key: str, pid: int, env: dict[str, str]) -> tuple[list[int], int, int]:
    """RSS samples while wrk runs, how many requests wrk completed, and how many were not 2xx."""
    wrk_env = {**env, "BENCH_API_KEY": key, "BENCH_MODEL": "gpt-4o-mini", "BENCH_STREAM": "0"}
    script = str(HERE / "chat.lua")
    wrk = subprocess.Popen(
        ["wrk", "-t2", "-c20", f"-d{SOAK_SECONDS}s", "-s", script, url],
        env=wrk_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    samples: list[int] = []
    try:
        while wrk.poll() is None:
            samples.append(rss(pid))
            time.sleep(SAMPLE_EVERY)
    finally:
        if wrk.poll() is None:
            wrk.kill()
    output = wrk.stdout.read() if wrk.stdout else ""
    results = [line for line in output.splitlines() if line.startswith("BENCH_RESULT ")]
    summary = json.loads(results[-1].removeprefix("BENCH_RESULT ")) if results else {"requests": 0, "errors": {}}
    return samples, int(summary["requests"]), int(summary["errors"].get("status", 0))


def main() -> int:
    env = {**ENV_DEFAULTS, **os.environ}
    children = Children()
    try:
        fake_port = free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        fake_args = ["-m", "aichat_gateway.fakeupstream", "--port", str(fake_port), "--workers", "2"]
        fake = children.start([PYTHON, *fake_args, "--chunks", "600", "--chunk-interval-ms", "1000"], env)
        wait_healthy(fake_url + "/healthz", fake)
        seeded = seed_demo(fake_url, env)
        port = free_port()
        gateway = children.start(
            [GATEWAY_CLI, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], env
        )
        wait_healthy(f"http://127.0.0.1:{port}/healthz", gateway)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        key = seeded["api_key"]
        subprocess.run(  # warm-up: imports, pools, caches
            ["wrk", "-t1", "-c5", "-d3s", "-s", str(HERE / "chat.lua"), url],
            env={**env, "BENCH_API_KEY": key, "BENCH_MODEL": "gpt-4o-mini", "BENCH_STREAM": "0"},
            stdout=subprocess.DEVNULL,
            check=True,
        )
        time.sleep(2)
        idle = rss(gateway.pid)
        with_streams, held = asyncio.run(measure_open_streams(url, key, gateway.pid))
        per_stream = (with_streams - idle) / held
        print(f"RSS idle {idle / KIB / KIB:.1f} MiB; with {held} open streams {with_streams / KIB / KIB:.1f} MiB")
        print(f"per open stream: {per_stream / KIB:.1f} KiB (goal <= 50 KiB)")
        samples, soak_requests, soak_refused = soak(url, key, gateway.pid, env) if SOAK_SECONDS > 0 else ([], 0, 0)
        steady = samples[WARM_UP_SAMPLES:]
        growth = (max(steady) - min(steady)) if steady else 0
        if samples:
            print(f"soak: {soak_requests} requests in {SOAK_SECONDS} s at 20 connections, {soak_refused} not 2xx")
            print("soak RSS MiB every 10 s:", " ".join(f"{s / KIB / KIB:.1f}" for s in samples))
        if steady:
            print(
                f"after warm-up: min {min(steady) / KIB / KIB:.1f} MiB, max {max(steady) / KIB / KIB:.1f} MiB, "
                f"spread {growth / KIB / KIB:.1f} MiB"
            )
        stamp = time.strftime("%Y%m%dT%H%M%S")
        out = HERE / "results" / f"memory-{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(
            json.dumps(
                {
                    "timestamp": stamp,
                    "streams": held,
                    "rss_idle_bytes": idle,
                    "rss_with_streams_bytes": with_streams,
                    "per_stream_bytes": round(per_stream),
                    "soak_seconds": SOAK_SECONDS,
                    "soak_requests": soak_requests,
                    "soak_not_2xx": soak_refused,
                    "soak_rss_samples_bytes": samples,
                    "soak_spread_after_warmup_bytes": growth,
                },
                indent=2,
            )
            + "\n"
        )
        print(f"written {out.relative_to(ROOT)}")
        return 0
    finally:
        children.close()


if __name__ == "__main__":
    raise SystemExit(main())
