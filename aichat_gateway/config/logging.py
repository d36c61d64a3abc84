"""structlog set-up: JSON lines, a request id bound per request, and redaction of secrets.

Redaction works at two depths because either alone leaks: by field name (anything called like a
key, token or password is replaced whole) and by value (strings that look like bearer tokens or
provider keys are masked wherever they appear, e.g. inside an exception message).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

# "token" only at the end of a name: `csrf_token` is secret, `prompt_tokens` is a count.
_SECRET_FIELD = re.compile(r"(pass(word)?|secret|api_?key|authorization|cookie|credential)|token$", re.I)
# Gateway keys (agw-...), OpenAI/Anthropic style keys (sk-...), Stripe keys and bearer headers.
_SECRET_VALUE = re.compile(
    r"(?:Bearer\s+[A-Za-z0-9._~+/=-]{8,})|(?:\b(?:agw|sk|rk|pk|whsec)[-_][A-Za-z0-9_-]{8,})", re.I
)
REDACTED = "[redacted]"


def mask(value: str) -> str:
    """Mask every secret-looking run inside a free-form string."""
    return _SECRET_VALUE.sub(REDACTED, value)


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_FIELD.search(k) else _redact(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the last line of defence before anything is written."""
    for key, value in list(event_dict.items()):
        if _SECRET_FIELD.search(key) and key not in ("event",):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(value)
    return event_dict


def configure_logging(level: str = "info", json: bool = True, stream: Any = None) -> None:
    """Configure structlog and route the standard library's loggers through the same redaction."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_secrets,
    ]
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stdout),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer, foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared]
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at info level: noise, and a cost on the hot path.
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
