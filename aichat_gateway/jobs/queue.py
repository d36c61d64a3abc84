"""PgQueuer over our Postgres: its object names, its install SQL, enqueueing, and the schema check.

The names are pinned here rather than read from PgQueuer's `PGQUEUER_*` environment variables:
migration 0010 created exactly these objects, so a stray variable must not point the queue at
tables that do not exist. Everything that talks to PgQueuer builds its `Queries` with `queries_on`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy
from pgqueuer.adapters.drivers.asyncpg import AsyncpgDriver
from pgqueuer.adapters.persistence.qb import (
    DBSettings,
    Durability,
    QueryBuilderEnvironment,
    QueryQueueBuilder,
    QuerySchedulerBuilder,
)
from pgqueuer.adapters.persistence.queries import Queries
from pgqueuer.domain.types import Channel
from pgqueuer.ports.driver import Driver

from aichat_gateway.jobs.errors import InvalidJob

# A pool, or one connection (the caller's transaction, if it is in one).
Db: TypeAlias = asyncpg.Pool | asyncpg.Connection | PoolConnectionProxy

_TASK_NAME = re.compile(r"[a-z][a-z0-9_.-]{0,99}")


def names() -> DBSettings:
    """PgQueuer's default object names (`pgqueuer`, `pgqueuer_log`, ...), every field explicit so
    no environment variable can change them."""
    return DBSettings(
        prefix="",
        db_schema=None,
        channel=Channel("ch_pgqueuer"),
        function="fn_pgqueuer_changed",
        statistics_table="pgqueuer_statistics",
        queue_status_type="pgqueuer_status",
        queue_table="pgqueuer",
        queue_table_log="pgqueuer_log",
        trigger="tg_pgqueuer_changed",
        schedules_table="pgqueuer_schedules",
        durability=Durability.durable,
        widen_id=True,
    )


def channel() -> Channel:
    return Channel(names().channel)


def install_sql() -> str:
    """The DDL the installed PgQueuer would create: the source of migration 0010's first part."""
    return QueryBuilderEnvironment(names()).build_install_query(create_schema=False)


def queries_on(driver: Driver) -> Queries:
    settings = names()
    return Queries(
        driver,
        qbe=QueryBuilderEnvironment(settings),
        qbq=QueryQueueBuilder(settings),
        qbs=QuerySchedulerBuilder(settings),
    )


def check_task_name(name: str) -> str:
    if not _TASK_NAME.fullmatch(name):
        raise InvalidJob(f"task name {name!r}: lower-case letters, digits and _ . - (at most 100), a letter first")
    return name


async def enqueue(
    db: Db,
    task: str,
    payload: Mapping[str, Any] | None = None,
    *,
    delay: timedelta | None = None,
    dedupe_key: str | None = None,
) -> int | None:
    """Queue one run of `task` with a JSON object as its payload; returns the job's id.

    On a connection inside a transaction the job is queued only if that transaction commits (and
    workers hear of it then). With `dedupe_key`, a job with the same key still queued or running
    makes this a no-op that returns None.
    """
    check_task_name(task)
    try:
        body = orjson.dumps(dict(payload or {}))
    except TypeError as exc:
        raise InvalidJob(f"payload of {task}: {exc}") from None
    # PgQueuer's own statement, its arguments passed here rather than through `Queries.enqueue`,
    # which sends the (empty) headers as JSON text: on a connection with a jsonb codec (the app's
    # pool decodes and encodes JSON with orjson) that text is encoded again, and the stored JSON
    # string fails PgQueuer's Job model when a worker takes the job. A NULL passes every codec.
    rows = await db.fetch(
        QueryQueueBuilder(names()).build_enqueue_query("skip"),
        [0],  # priority
        [task],
        [body],
        [delay or timedelta(0)],
        [dedupe_key],
        [None],  # headers
    )
    return int(rows[0]["id"]) if rows else None


async def schema_problems(conn: asyncpg.Connection) -> list[str]:
    """What the installed PgQueuer finds missing or different in this database's queue schema
    (empty when migration 0010 matches it): its own upgrade planner, run without applying."""
    plan = await queries_on(AsyncpgDriver(conn)).plan_upgrade()
    return [*plan.statements, *plan.notes]
