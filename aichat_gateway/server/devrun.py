"""`make run`: the demo in one command.

Creates the database if it is missing, migrates, starts the built-in fake upstream, seeds the
demo (seller, listing, buyer key), prints how to call the gateway, then serves in the foreground.
Ctrl-C stops both processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import asyncpg

from aichat_gateway import embedded
from aichat_gateway.config.logging import configure_logging
from aichat_gateway.config.settings import Settings, SettingsError, load_settings
from aichat_gateway.server.demo import run_demo

FAKE_PORT = int(os.environ.get("DEMO_FAKE_UPSTREAM_PORT", "9100"))


async def ensure_database(database_url: str) -> None:
    """Create the database named in DATABASE_URL if it does not exist (fresh machines)."""
    base, _, name = database_url.rpartition("/")
    name = name.split("?", 1)[0]
    try:
        conn = await asyncpg.connect(database_url)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(base + "/postgres")
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        print(f"created database {name}", flush=True)
    else:
        await conn.close()


def _wait_for(url: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback URL we built
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up within {seconds:.0f}s")


def main() -> int:
    try:
        settings: Settings = load_settings()
    except SettingsError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    configure_logging("warning", json=False, stream=sys.stderr)
    # Ctrl-C or a plain `kill`: unwind through the `finally` blocks below, which stop the children
    # and the embedded servers (a shell's background job starts with SIGINT ignored, so set the handler explicitly).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    # Postgres and Redis: the configured ones, else 127.0.0.1's, else embedded ones for this run (embedded.py).
    try:
        wanted = embedded.run_services(settings, os.environ)
        with embedded.local_services(*wanted, Path.cwd() / ".local" / "run", durable=True) as local:
            if line := local.summary():
                print(f"make run: {line}", flush=True)
            os.environ.update(DATABASE_URL=local.database_url, REDIS_URL=local.redis_url)  # for the children too
            return _run(load_settings())
    except embedded.EmbeddedError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def _run(settings: Settings) -> int:
    exe = os.path.join(os.path.dirname(sys.executable), "aichat-gateway")
    asyncio.run(ensure_database(settings.database_url))
    subprocess.run([exe, "migrate"], check=True)
    fake = subprocess.Popen([exe, "fake-upstream", "--port", str(FAKE_PORT), "--chunk-interval-ms", "20"])
    try:
        _wait_for(f"http://127.0.0.1:{FAKE_PORT}/healthz")
        gateway_url = f"http://{settings.host}:{settings.port}/v1"
        demo = asyncio.run(run_demo(settings, f"http://127.0.0.1:{FAKE_PORT}/v1", gateway_url))
        key, model = demo["api_key"], demo["model"]
        print(
            f"""
AIChat Gateway demo
  base URL : {gateway_url}
  API key  : {key}
  model    : {model}
  balance  : {demo["balance_usd"]} USD of demo credit

Dashboard: {gateway_url[:-3]}/
  buyer  : {demo["buyer_email"]} / {demo["buyer_password"]}
  seller : {demo["seller_email"]} / {demo["seller_password"]}
  admin  : {demo["admin_email"]} / {demo["admin_password"]}

Try it (in another terminal):
  curl -s {gateway_url}/chat/completions -H "Authorization: Bearer {key}" \\
       -H "Content-Type: application/json" \\
       -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'

With the openai SDK: OpenAI(base_url="{gateway_url}", api_key="{key}")
""",
            flush=True,
        )
        gateway = subprocess.Popen([exe, "serve"])
        try:
            return gateway.wait()
        finally:
            gateway.terminate()  # SIGTERM: the gateway drains its streams, then exits
            gateway.wait(timeout=60)
    except KeyboardInterrupt:
        return 0
    finally:
        fake.terminate()
        fake.wait(timeout=10)


if __name__ == "__main__":
    raise SystemExit(main())
