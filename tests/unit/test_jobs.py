"""The job queue's pure parts: retry delays, cron periods, the registry's rules, payload decoding,
the settings that configure it, and migration 0010 as PgQueuer's own install SQL."""

from __future__ import annotations

import ast
import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pgqueuer
import pytest
from pgqueuer.domain import models

import aichat_gateway.jobs
from aichat_gateway.billing import jobs as billing_jobs
from aichat_gateway.config.settings import SettingsError, load_settings
from aichat_gateway.jobs.errors import BadPayload, InvalidJob
from aichat_gateway.jobs.queue import enqueue, install_sql
from aichat_gateway.jobs.registry import Job, JobRegistry, RetryPolicy, period_of
from aichat_gateway.jobs.worker import to_job
from aichat_gateway.migrations.runner import discover

SECRET = "x" * 40
MONDAY_6 = datetime(2030, 1, 14, 6, 0, tzinfo=UTC)


async def nothing(job: Job) -> None:
    return None


# ---- retries -----------------------------------------------------------------------------------


def test_retry_delays_double_from_the_first_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=6, first_delay=timedelta(seconds=10), max_delay=timedelta(seconds=60))
    assert [policy.delay_after(n) for n in range(1, 6)] == [timedelta(seconds=s) for s in (10, 20, 40, 60, 60)]


def test_after_the_last_attempt_there_is_no_retry() -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.delay_after(3) is None
    assert RetryPolicy(attempts=1).delay_after(1) is None


def test_a_retry_delay_after_very_many_attempts_stays_at_the_cap() -> None:
    policy = RetryPolicy(attempts=10_000, max_delay=timedelta(hours=1))
    assert policy.delay_after(5_000) == timedelta(hours=1)


@pytest.mark.parametrize(
    ("attempts", "first", "cap"), [(0, 1, 2), (3, -1, 2), (3, 5, 2)], ids=["no-attempt", "negative", "cap-below-first"]
)
def test_an_impossible_retry_policy_is_refused(attempts: int, first: int, cap: int) -> None:
    with pytest.raises(InvalidJob):
        RetryPolicy(attempts=attempts, first_delay=timedelta(seconds=first), max_delay=timedelta(seconds=cap))


# ---- periods -----------------------------------------------------------------------------------


def test_a_firing_on_the_tick_is_for_that_tick() -> None:
    assert period_of("0 6 * * 1", MONDAY_6) == MONDAY_6


def test_a_firing_just_after_the_tick_is_for_that_tick() -> None:
    assert period_of("0 6 * * 1", MONDAY_6 + timedelta(milliseconds=300)) == MONDAY_6


def test_a_firing_just_before_the_tick_is_for_the_previous_one() -> None:
    assert period_of("0 6 * * 1", MONDAY_6 - timedelta(seconds=1)) == MONDAY_6 - timedelta(days=7)


def test_a_late_firing_is_for_the_latest_tick_it_missed() -> None:
    assert period_of("0 6 * * 1", MONDAY_6 + timedelta(days=15)) == MONDAY_6 + timedelta(days=14)


def test_a_cron_with_seconds_has_periods_of_seconds() -> None:
    at = datetime(2030, 1, 14, 6, 0, 5, 250_000, tzinfo=UTC)
    assert period_of("* * * * * *", at) == at.replace(microsecond=0)


def test_a_job_carries_its_period() -> None:
    job = Job(1, "billing.payout-run", {"period": MONDAY_6.isoformat()}, 2)
    assert job.period == MONDAY_6
    assert Job(1, "t", {}, 1).period is None


# ---- the registry ------------------------------------------------------------------------------


def test_a_task_name_is_registered_once() -> None:
    registry = JobRegistry()
    registry.task("documents.ingest", nothing)
    with pytest.raises(InvalidJob, match="already registered"):
        registry.task("documents.ingest", nothing)


@pytest.mark.parametrize("name", ["", "Upper", "1st", "has space", "semi;colon", "x" * 101])
def test_a_task_name_outside_the_rule_is_refused(name: str) -> None:
    with pytest.raises(InvalidJob, match="task name"):
        JobRegistry().task(name, nothing)


def test_a_periodic_task_with_a_bad_cron_expression_is_refused_and_not_registered() -> None:
    registry = JobRegistry()
    with pytest.raises(InvalidJob, match="cron"):
        registry.periodic("reports.monthly", "every monday", nothing)
    assert not registry.tasks and not registry.periodic_tasks


def test_a_periodic_task_is_a_task_and_a_schedule() -> None:
    registry = JobRegistry()
    registry.periodic("reports.monthly", "0 7 1 * *", nothing)
    assert registry.tasks["reports.monthly"].concurrency == 1
    assert [(p.task, p.cron) for p in registry.periodic_tasks] == [("reports.monthly", "0 7 1 * *")]


def test_enqueue_refuses_a_bad_task_name_before_touching_the_database() -> None:
    with pytest.raises(InvalidJob, match="task name"):
        asyncio.run(enqueue(None, "Bad Name"))  # type: ignore[arg-type]


def test_enqueue_refuses_a_payload_that_is_not_json() -> None:
    with pytest.raises(InvalidJob, match="payload"):
        asyncio.run(enqueue(None, "reports.monthly", {"when": object()}))  # type: ignore[arg-type]


# ---- payloads ----------------------------------------------------------------------------------


def pgq_job(payload: bytes | None, attempts: int = 0) -> models.Job:
    now = datetime.now(UTC)
    return models.Job(
        id=7,
        priority=0,
        created=now,
        updated=now,
        heartbeat=now,
        execute_after=now,
        status="picked",
        entrypoint="documents.ingest",
        payload=payload,
        attempts=attempts,
        queue_manager_id=None,
        headers=None,
    )


def test_a_queued_payload_reaches_the_handler_as_an_object_with_the_attempt_counted_from_one() -> None:
    job = to_job(pgq_job(b'{"document": "d1"}', attempts=2))
    assert (job.id, job.task, dict(job.payload), job.attempt) == (7, "documents.ingest", {"document": "d1"}, 3)
    assert to_job(pgq_job(None)).payload == {}


@pytest.mark.parametrize("payload", [b"[1, 2]", b"not json", b'"text"'])
def test_a_payload_that_is_not_a_json_object_cannot_succeed(payload: bytes) -> None:
    with pytest.raises(BadPayload):
        to_job(pgq_job(payload))


# ---- settings and billing's registration -------------------------------------------------------


def test_the_payout_run_is_scheduled_weekly_on_monday_morning_by_default() -> None:
    settings = load_settings(GATEWAY_SECRET_KEY=SECRET)
    assert (settings.payout_cron, settings.worker_in_serve) == ("0 6 * * 1", True)


def test_an_empty_payout_cron_schedules_nothing() -> None:
    assert load_settings(GATEWAY_SECRET_KEY=SECRET, GATEWAY_PAYOUT_CRON=" ").payout_cron is None


def test_a_payout_cron_that_is_not_cron_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="GATEWAY_PAYOUT_CRON"):
        load_settings(GATEWAY_SECRET_KEY=SECRET, GATEWAY_PAYOUT_CRON="mondays")


def test_billing_registers_the_payout_run_as_a_periodic_task_or_only_as_a_task() -> None:
    scheduled, unscheduled = JobRegistry(), JobRegistry()
    billing_jobs.register(scheduled, None, "0 6 * * 1")  # type: ignore[arg-type]
    billing_jobs.register(unscheduled, None, None)  # type: ignore[arg-type]
    assert [(p.task, p.cron) for p in scheduled.periodic_tasks] == [(billing_jobs.PAYOUT_RUN, "0 6 * * 1")]
    assert billing_jobs.PAYOUT_RUN in unscheduled.tasks and not unscheduled.periodic_tasks


# ---- migration 0010 ----------------------------------------------------------------------------


@pytest.mark.skipif(pgqueuer.__version__ != "1.6.0", reason="0010 is 1.6.0's schema; a newer one needs a migration")
def test_migration_0010_holds_pgqueuers_install_sql_unedited() -> None:
    migration = next(m for m in discover() if m.version == 10)
    assert migration.name == "0010_job_queue.sql"
    assert install_sql().strip() in migration.sql


def test_the_jobs_package_imports_none_of_the_feature_packages() -> None:
    folder = Path(aichat_gateway.jobs.__file__).parent
    imported: set[str] = set()
    for path in folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    ours = {name.split(".")[1] for name in imported if name.startswith("aichat_gateway.")}
    assert ours <= {"config", "jobs"}, ours
