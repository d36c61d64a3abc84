"""structlog set-up: JSON lines, a request id bound per request, and redaction of secrets.

Redaction works at three depths because none alone leaks nothing: by field name (anything called
like a key, token or password is replaced whole), by value (strings that look like bearer tokens or
provider keys are masked wherever they appear, e.g. inside an exception message), and by the exact
secrets a request is using (`remember_secret`: the provider key of the route it was sent to), since
no pattern knows every provider's key format.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

# "token" only at the end of a name: `csrf_token` is secret, `prompt_tokens` is a count.
_SECRET_FIELD = re.compile(r"(pass(word)?|secret|api_?key|authorization|cookie|credential)|token$", re.I)
# Gateway keys (agw-...), OpenAI/Anthropic style keys (sk-...), Stripe keys, bearer headers, and the
# key formats of common OpenAI-compatible providers (Groq gsk_, xAI xai-, Perplexity pplx-, Hugging
# Face hf_, Replicate r8_, NVIDIA nvapi-, Cerebras csk-, Fireworks fw_, Google AIza...).
_SECRET_VALUE = re.compile(
    r"(?:Bearer\s+[A-Za-z0-9._~+/=-]{8,})"
    r"|(?:\b(?:agw|sk|rk|pk|whsec|gsk|xai|pplx|hf|r8|nvapi|csk|fw)[-_][A-Za-z0-9_-]{8,})"
    r"|(?:\bAIza[A-Za-z0-9_-]{30,})",
    re.I,
)
REDACTED = "[redacted]"
# A secret shorter than this is not masked by its exact value: it would garble ordinary words.
MIN_EXACT_SECRET = 6
# The exact secrets the current request handles (its route's provider key); each request runs in a
# task of its own, so what one request remembers is invisible to every other.
_request_secrets: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("request_secrets", default=())


def remember_secret(secret: str) -> None:
    """Mask this exact value in every log line of the current request from now on."""
    if len(secret) >= MIN_EXACT_SECRET:
        _request_secrets.set((*_request_secrets.get(), secret))


def mask(value: str, exact: Iterable[str] = ()) -> str:
    """Mask every secret-looking run inside a free-form string, and each of the `exact` secrets."""
    for secret in exact:
        if len(secret) >= MIN_EXACT_SECRET:
            value = value.replace(secret, REDACTED)
    return _SECRET_VALUE.sub(REDACTED, value)


def _redact(value: Any, exact: tuple[str, ...], depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return mask(value, exact)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_FIELD.search(k) else _redact(v, exact, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, exact, depth + 1) for v in value]
    return value


def redact_secrets(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the last line of defence before anything is written."""
    exact = _request_secrets.get()
    for key, value in list(event_dict.items()):
        if _SECRET_FIELD.search(key) and key not in ("event",):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(value, exact)
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
    # httpx logs every request at info level: noise, and a cost on the hot path. The Stripe SDK logs
    # at info and debug what it sends and gets (e-mails, client secrets, Stripe's error texts, which
    # may quote a key): billing logs what matters itself, scrubbed.
    for noisy in ("uvicorn.access", "httpx", "httpcore", "stripe"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
