"""The accounts package as the app sees it: its `/api` routes and the work it runs in the background.

Background: every process listens for key revocations and session ends (pub/sub), flushes keys'
`last_used_at` every few seconds (and once more on the way out), and prunes expired sessions.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg

from aichat_gateway.accounts import admin_api, api, session_api, sessions
from aichat_gateway.accounts.services import AccountsServices
from aichat_gateway.apiroute import ApiRoute
from aichat_gateway.config.logging import get_logger
from aichat_gateway.supervisor import Supervisor

log = get_logger(__name__)

# Expired session rows go in batches (sessions.prune), at most this many batches per run.
SESSION_PRUNE_INTERVAL = 600.0
SESSION_PRUNE_MAX_BATCHES = 20
KEY_LAST_USED_FLUSH = 5.0


def routes() -> list[ApiRoute]:
    return [*api.routes(), *session_api.routes(), *admin_api.routes()]


async def prune_sessions(db: asyncpg.Pool, clock: Callable[[], float]) -> None:
    total = 0
    for _ in range(SESSION_PRUNE_MAX_BATCHES):
        pruned = await sessions.prune(db, clock())
        total += pruned
        if pruned < sessions.PRUNE_BATCH:
            break
    if total:
        log.info("sessions_pruned", count=total)


@asynccontextmanager
async def running(svc: AccountsServices, supervisor: Supervisor) -> AsyncIterator[None]:
    supervisor.start("key-revocations", svc.keys.listen_for_revocations)
    supervisor.start("session-ends", svc.sessions.listen)
    supervisor.every("session-prune", SESSION_PRUNE_INTERVAL, functools.partial(prune_sessions, svc.db, svc.clock))
    supervisor.every("key-last-used", KEY_LAST_USED_FLUSH, svc.keys.flush_last_used)
    yield
    await svc.keys.flush_last_used()
