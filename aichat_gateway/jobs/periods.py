"""Queueing a periodic task's job: once per period, whoever fires it.

PgQueuer's scheduler keeps one row per periodic task and hands each due tick to one worker (row
lock, SKIP LOCKED), but it fires again when the worker that fired went quiet for 30 s, and a
firing is only a call: if it fails, that tick is gone. So a firing does little and makes it
stick: in one transaction it claims the period in `job_periods` (primary key: task, period) and
queues the job, which then has the queue's retries and dead-worker recovery. A second firing for
the same period finds the claim and queues nothing.

The period is computed from the database's clock, so workers whose clocks differ agree on it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import asyncpg

from aichat_gateway.jobs.queue import enqueue
from aichat_gateway.jobs.registry import PERIOD_KEY, Periodic, period_of

# Claims older than this are deleted when a task fires again (the newest always stays: it is newer).
KEEP_CLAIMS: Final = timedelta(days=60)


async def queue_period(db: asyncpg.Pool, periodic: Periodic) -> tuple[datetime, int | None]:
    """Queue `periodic`'s job for the period the database's clock is in; returns the period and
    the new job's id, or None when that period was queued before."""
    async with db.acquire() as conn, conn.transaction():
        now: datetime = await conn.fetchval("SELECT now()")
        period = period_of(periodic.cron, now)
        claimed = await conn.fetchval(
            "INSERT INTO job_periods (task, period) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
            periodic.task,
            period,
        )
        if not claimed:
            return period, None
        job_id = await enqueue(conn, periodic.task, {PERIOD_KEY: period.isoformat()})
        await conn.execute(
            "UPDATE job_periods SET job_id = $3 WHERE task = $1 AND period = $2", periodic.task, period, job_id
        )
        await conn.execute(
            "DELETE FROM job_periods WHERE task = $1 AND period < $2", periodic.task, period - KEEP_CLAIMS
        )
    return period, job_id
