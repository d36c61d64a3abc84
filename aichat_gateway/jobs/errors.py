"""Errors of the jobs package. None reaches HTTP: enqueueing is called by code, not by a client,
and a worker's failures are logged and end its run (the supervisor or the process manager restarts it).

JobsError
├── InvalidJob      a task name, cron expression or payload that cannot be queued or registered;
│                   a programming or configuration error, raised where it is made
├── BadPayload      a queued job whose payload is not a JSON object: it fails without retries
└── QueueNotReady   the queue's tables are missing or differ from what the installed PgQueuer
                    expects: run `aichat-gateway migrate`
"""

from __future__ import annotations


class JobsError(Exception):
    pass


class InvalidJob(JobsError, ValueError):
    pass


class BadPayload(JobsError):
    pass


class QueueNotReady(JobsError):
    pass
