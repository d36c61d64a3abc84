"""Billing's background work on the job queue: the weekly payout run as a periodic task.

The run (`Payouts.run`) is idempotent per ISO week (each seller's request key names the week), so
the queue running it again — a retry, a catch-up after every worker was down — pays nobody
twice. Each job runs for its period (the cron tick), not for the moment a worker got to it, so a
retry on Tuesday still books Monday's week. `aichat-gateway payouts run` does the same from cron.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import asyncpg

from aichat_gateway.billing.autorecharge import AutoRecharge
from aichat_gateway.billing.errors import PaymentsUnavailable
from aichat_gateway.billing.payouts import Payouts
from aichat_gateway.billing.stripe_client import StripeClient
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.settings import Settings
from aichat_gateway.jobs.registry import Job, JobRegistry, RetryPolicy

log = get_logger(__name__)

PAYOUT_RUN: Final = "billing.payout-run"
# Stripe not answering is the usual failure: try again over a few hours, then leave the job
# failed (visible) and the payouts pending for next week's run, as before.
PAYOUT_RUN_RETRY: Final = RetryPolicy(attempts=6, first_delay=timedelta(minutes=5), max_delay=timedelta(hours=1))


AUTO_RECHARGE: Final = "billing.auto-recharge"
AUTO_RECHARGE_CRON: Final = "* * * * *"


def register_auto_recharge(registry: JobRegistry, db: asyncpg.Pool, settings: Settings) -> None:
    """Auto-recharge, checked every minute when Stripe is configured (autorecharge.py)."""
    if settings.stripe_secret_key is None:
        return

    async def auto_recharge(job: Job) -> None:
        async with StripeClient.open(settings) as stripe:
            started = await AutoRecharge(db, stripe).run_once()
        if started:
            log.info("auto_recharge_run", started=started)

    registry.periodic(AUTO_RECHARGE, AUTO_RECHARGE_CRON, auto_recharge)


def register(registry: JobRegistry, payouts: Payouts, cron: str | None) -> None:
    """The payout run as a task, queued once per tick of `cron` (UTC); None: only on demand
    (an operator who runs `aichat-gateway payouts run` from cron instead)."""

    async def payout_run(job: Job) -> None:
        report = await payouts.run(job.period or payouts.now())
        if report.pending:
            raise PaymentsUnavailable(f"Stripe did not answer for {report.pending} payout(s); they stay pending")

    if cron is None:
        registry.task(PAYOUT_RUN, payout_run, retry=PAYOUT_RUN_RETRY, concurrency=1)
    else:
        registry.periodic(PAYOUT_RUN, cron, payout_run, retry=PAYOUT_RUN_RETRY)
