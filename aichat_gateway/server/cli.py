"""The `aichat-gateway` command line: migrate, audit, serve, settle, worker, create-admin, demo, payouts, fake-upstream.

Every command reads settings once from the environment (see the README's table) and fails with a
one-line message, not a traceback, when they are invalid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg

from aichat_gateway.config.money import parse_usd_micro
from aichat_gateway.config.settings import Settings, SettingsError, load_settings

T = TypeVar("T")


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        print(f"aichat-gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


async def _migrate(settings: Settings) -> list[str]:
    from aichat_gateway.migrations.runner import migrate

    conn = await asyncpg.connect(settings.database_url)
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def cmd_migrate(args: argparse.Namespace) -> int:
    from aichat_gateway.migrations.runner import MigrationError

    try:
        applied = asyncio.run(_migrate(_settings()))
    except (MigrationError, OSError, asyncpg.PostgresError) as exc:
        print(f"aichat-gateway migrate: {exc}", file=sys.stderr)
        return 1
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


async def _audit(settings: Settings) -> tuple[list[str], int, int]:
    from aichat_gateway.billing import auditruns

    conn = await asyncpg.connect(settings.database_url)
    try:
        # One snapshot for the checks and the counts printed beside them; kept for the admin console.
        breaches, accounts, transfers = await auditruns.check(conn)
        await auditruns.record(conn, breaches, accounts, transfers, ran_by=None)
    finally:
        await conn.close()
    return breaches, accounts, transfers


def cmd_audit(args: argparse.Namespace) -> int:
    try:
        breaches, accounts, transfers = asyncio.run(_audit(_settings()))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"aichat-gateway audit: {exc}", file=sys.stderr)
        return 2
    for line in breaches:
        print(line)
    if breaches:
        return 1
    print(f"ledger ok: {accounts} accounts, {transfers} transfers")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from aichat_gateway.proxy.writes import HeadHoldingHttpToolsProtocol

    settings = _settings()
    workers = args.workers or settings.workers
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers are separate processes: share metric files so /metrics shows the sum of all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="aichat-metrics-")
    uvicorn.run(
        "aichat_gateway.server.app:app_from_env",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        workers=workers,
        loop="uvloop",
        http=HeadHoldingHttpToolsProtocol,  # httptools; a response's head leaves with its body (writes.py)
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    return 0


async def _settle(settings: Settings, args: argparse.Namespace) -> None:
    import signal
    import socket

    from redis.asyncio import Redis

    from aichat_gateway.billing.holds import HotBalances
    from aichat_gateway.billing.settle import Settler

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # min_size=0: no connection at start, so a Postgres that is not up yet is waited out like an outage.
    db = await asyncpg.create_pool(settings.database_url, min_size=0, max_size=2)
    redis = Redis.from_url(settings.redis_url)
    try:
        settler = Settler(
            db,
            redis,
            settings.redis_prefix,
            settings.platform_fee,
            after_commit=HotBalances(redis, settings.redis_prefix).applied,
            consumer=f"{socket.gethostname()}-{os.getpid()}",
            batch_size=args.batch_size,
            block_ms=args.block_ms,
            claim_idle_ms=args.claim_idle_ms,
            linger=args.linger,
        )
        await settler.run(stop)
    finally:
        await redis.aclose()
        await db.close()


def cmd_settle(args: argparse.Namespace) -> int:
    from aichat_gateway.config.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, json=settings.log_json)
    asyncio.run(_settle(settings, args))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from aichat_gateway.server.worker import run_worker_command

    return run_worker_command(_settings())


def _with_pool(settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    """Run one database job from the command line on a pool of its own."""
    from aichat_gateway.server.services import create_db_pool

    async def run() -> T:
        db = await create_db_pool(settings)
        try:
            return await work(db)
        finally:
            await db.close()

    return asyncio.run(run())


def cmd_create_admin(args: argparse.Namespace) -> int:
    from redis.asyncio import Redis

    from aichat_gateway.accounts.errors import AccountsError
    from aichat_gateway.accounts.sessioncache import announce_user_sessions_ended
    from aichat_gateway.accounts.users import create_admin

    settings = _settings()

    async def work(db: asyncpg.Pool) -> tuple[str, bool]:
        # The password is (re)set and every session of the account ends in one transaction; then
        # the running gateways are told, so none of them accepts an old session any more.
        user = await create_admin(db, args.email, args.password)
        redis = Redis.from_url(settings.redis_url, socket_connect_timeout=5, socket_timeout=5)
        try:
            told = await announce_user_sessions_ended(redis, settings, user.id)
        finally:
            await redis.aclose()
        return user.id, told

    try:
        user_id, told = _with_pool(settings, work)
    except AccountsError as exc:
        print(f"aichat-gateway create-admin: {exc.message}", file=sys.stderr)
        return 1
    print(f"admin {args.email} ready (id {user_id}); every earlier session of the account has ended")
    if not told:
        print(
            "aichat-gateway create-admin: Redis did not take the news; running gateways may accept an old "
            f"session of this account for up to {settings.session_cache_ttl:g} s",
            file=sys.stderr,
        )
    return 0


def _positive_usd(text: str) -> int:
    """An amount of USD on the command line, as micro-USD; argparse prints the reason if not."""
    try:
        amount = parse_usd_micro(text, name="the amount")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if amount <= 0:
        raise argparse.ArgumentTypeError("the amount must be more than 0")
    return amount


def cmd_demo(args: argparse.Namespace) -> int:
    from aichat_gateway.server.demo import run_demo

    settings = _settings()
    result = asyncio.run(run_demo(settings, args.upstream_url, args.gateway_url, args.funds))
    if args.json:
        import orjson

        print(orjson.dumps(result).decode())
    else:
        print(f"buyer key : {result['api_key']}\nbase URL  : {result['base_url']}\nmodel     : {result['model']}")
    return 0


def cmd_rotate_keys(args: argparse.Namespace) -> int:
    from aichat_gateway.marketplace.listings import rotate_keys
    from aichat_gateway.marketplace.vault import Vault, VaultError

    settings = _settings()

    async def work(db: asyncpg.Pool) -> int:
        return await rotate_keys(db, Vault(settings.secret_keys))

    try:
        rotated = _with_pool(settings, work)
    except VaultError as exc:
        print(f"aichat-gateway rotate-keys: {exc}; keep the old key in GATEWAY_SECRET_KEY", file=sys.stderr)
        return 1
    print(f"re-encrypted {rotated} provider key(s) with the current master key")
    return 0


def cmd_payouts_run(args: argparse.Namespace) -> int:
    import dataclasses
    from datetime import UTC, datetime

    import orjson

    from aichat_gateway.billing.payouts import Payouts

    settings = _settings()

    async def work(db: asyncpg.Pool) -> dict[str, object]:
        return dataclasses.asdict(await Payouts.from_settings(db, settings).run(datetime.now(UTC)))

    report = _with_pool(settings, work)
    print(orjson.dumps(report).decode())
    # Stripe did not answer for some: they stay pending for the next run; a non-zero exit tells cron.
    return 1 if report["pending"] else 0


def cmd_fake_upstream(args: argparse.Namespace) -> int:
    from aichat_gateway import fakeupstream

    fakeupstream.serve(fakeupstream.config_from_args(args), host=args.host, port=args.port, workers=args.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aichat-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(func=cmd_migrate)
    sub.add_parser("audit", help="check the ledger's money invariants (exit 1 on any breach)").set_defaults(
        func=cmd_audit
    )

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int)
    serve.set_defaults(func=cmd_serve)

    settle = sub.add_parser("settle", help="settle metered usage into the ledger until SIGTERM/SIGINT")
    settle.add_argument("--batch-size", type=int, default=500, help="stream entries per Postgres transaction")
    settle.add_argument("--block-ms", type=int, default=1000, help="how long one read waits for new entries")
    settle.add_argument(
        "--claim-idle-ms", type=int, default=30_000, help="take over a dead worker's entries after this idle time"
    )
    settle.add_argument(
        "--linger", type=float, default=0.25, help="seconds a partial batch waits for more entries (fewer transactions)"
    )
    settle.set_defaults(func=cmd_settle)

    sub.add_parser(
        "worker", help="run background jobs and periodic tasks (the weekly payout run) until SIGTERM/SIGINT"
    ).set_defaults(func=cmd_worker)

    admin = sub.add_parser("create-admin", help="create (or promote) an admin user")
    admin.add_argument("--email", required=True)
    admin.add_argument("--password", required=True)
    admin.set_defaults(func=cmd_create_admin)

    demo = sub.add_parser("demo", help="seed a demo seller, listing and buyer key (idempotent)")
    demo.add_argument("--upstream-url", default="http://127.0.0.1:9100/v1")
    demo.add_argument("--gateway-url", default=None, help="base URL to print (default from settings)")
    demo.add_argument("--json", action="store_true", help="print one JSON line")
    demo.add_argument(
        "--funds",
        type=_positive_usd,
        default="10",
        help="top the demo buyer up to this many USD when below a tenth of it (default 10)",
    )
    demo.set_defaults(func=cmd_demo)

    sub.add_parser("rotate-keys", help="re-encrypt provider keys with the first GATEWAY_SECRET_KEY entry").set_defaults(
        func=cmd_rotate_keys
    )

    payouts = sub.add_parser("payouts", help="seller payouts").add_subparsers(dest="payouts_command", required=True)
    payouts.add_parser(
        "run", help="pay every seller with a connected account and at least the minimum (once per ISO week)"
    ).set_defaults(func=cmd_payouts_run)

    fake = sub.add_parser("fake-upstream", help="run the built-in OpenAI-compatible fake provider")
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=int, default=9100)
    fake.add_argument("--workers", type=int, default=1)
    from aichat_gateway import fakeupstream

    fakeupstream.add_cli_arguments(fake)
    fake.set_defaults(func=cmd_fake_upstream)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from aichat_gateway.config.logging import configure_logging

    args = build_parser().parse_args(argv)
    # Commands print their results on stdout; their logs go to stderr (`serve` logs to stdout).
    configure_logging("warning", json=False, stream=sys.stderr)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
