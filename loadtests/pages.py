"""Page loads of the dashboard's main pages: are they fast enough for a person (p95 < 200 ms)?

Starts a fake upstream and one gateway process (bench.py's database and Redis; `demo` seeds a
buyer, a seller and an admin), logs in as the admin (who sees every section), then for each main
page that exists:

- server: the page's HTML fetched `--requests` times in a row over one keep-alive connection
  (httpx, the session cookie), after a warm-up; p50/p95/max of the whole response;
- browser: `--loads` full loads in Debian's chromium (Playwright): navigation start to the `load`
  event (HTML, CSS, scripts, the font; later loads use the browser's cache like a person's).

    .venv/bin/python loadtests/pages.py [--requests 200] [--loads 20]

Prints a table and writes loadtests/results/pages-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import httpx
from bench import ENV_DEFAULTS, GATEWAY_CLI, PYTHON, Children, free_port, seed_demo, wait_healthy

HERE = Path(__file__).resolve().parent
PAGES = ("/login", "/app", "/app/keys", "/app/billing", "/app/market", "/app/seller", "/app/admin", "/app/activity")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p95_ms": round(percentile(ms, 0.95), 1),
        "max_ms": round(max(ms), 1),
    }


def server_times(base: str, cookies: httpx.Cookies, path: str, requests: int) -> list[float] | None:
    with httpx.Client(base_url=base, cookies=cookies if path != "/login" else None, timeout=10) as client:
        first = client.get(path)
        if first.status_code == 404:
            return None
        first.raise_for_status()
        for _ in range(10):
            client.get(path)
        times = []
        for _ in range(requests):
            start = time.perf_counter()
            client.get(path).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
        return times


def browser_times(base: str, email: str, password: str, paths: list[str], loads: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is missing: apt-get install -y chromium")
    found: dict[str, list[float]] = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(base + "/login")
        page.get_by_role("textbox", name="Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(base + "/app")
        for path in paths:
            times = []
            for _ in range(loads + 2):  # the first two fill the cache, as a returning person's has it
                page.goto(base + path, wait_until="load")
                times.append(page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd"))
            found[path] = times[2:]
        browser.close()
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--loads", type=int, default=20)
    args = parser.parse_args()
    env = {**ENV_DEFAULTS, **os.environ}
    children = Children()
    try:
        fake_port = free_port()
        fake_url = f"http://127.0.0.1:{fake_port}"
        fake = children.start([PYTHON, "-m", "aichat_gateway.fakeupstream", "--port", str(fake_port)], env)
        wait_healthy(fake_url + "/healthz", fake)
        seeded = seed_demo(fake_url, env)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        gateway = children.start([GATEWAY_CLI, "serve", "--host", "127.0.0.1", "--port", str(port)], env)
        wait_healthy(base + "/healthz", gateway)
        email, password = seeded["admin_email"], seeded["admin_password"]
        login = httpx.post(base + "/api/auth/login", json={"email": email, "password": password}, timeout=10)
        login.raise_for_status()
        server: dict[str, dict[str, float]] = {}
        for path in PAGES:
            times = server_times(base, login.cookies, path, args.requests)
            if times is not None:
                server[path] = summary(times)
        browser = {
            path: summary(ms) for path, ms in browser_times(base, email, password, list(server), args.loads).items()
        }
        print(f"\n{'page':<16} {'server p50':>11} {'p95':>8} {'max':>8}   {'browser p50':>12} {'p95':>8} {'max':>8}")
        for path in server:
            s, b = server[path], browser[path]
            print(
                f"{path:<16} {s['p50_ms']:>9.1f}ms {s['p95_ms']:>6.1f}ms {s['max_ms']:>6.1f}ms"
                f"   {b['p50_ms']:>10.1f}ms {b['p95_ms']:>6.1f}ms {b['max_ms']:>6.1f}ms"
            )
        stamp = time.strftime("%Y%m%dT%H%M%S")
        out = HERE / "results" / f"pages-{stamp}.json"
        out.parent.mkdir(exist_ok=True)
        payload = {
            "timestamp": stamp,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "requests": args.requests,
            "loads": args.loads,
            "server": server,
            "browser": browser,
        }
        out.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"\nwritten {out.relative_to(HERE.parent)}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        children.close()


if __name__ == "__main__":
    raise SystemExit(main())
