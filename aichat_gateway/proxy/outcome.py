"""How a `/v1` request ended: one name per end, as the usage event, the metrics and the logs show it.

A request the gateway refused or failed ends with its error's code (`GatewayError.code`, the
`code` of the OpenAI-shaped error the buyer got); one that reached a provider ends `ok`,
`client_error` (the provider refused the buyer's request and its 4xx was relayed),
`client_disconnected` or `upstream_error`. Settlement stores the value as it is.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    OK = "ok"
    CLIENT_ERROR = "client_error"
    CLIENT_DISCONNECTED = "client_disconnected"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    # Refused before or instead of an answer, named by the error's code:
    INVALID_REQUEST = "invalid_request"
    INVALID_API_KEY = "invalid_api_key"
    MISSING_API_KEY = "missing_api_key"
    PERMISSION_DENIED = "permission_denied"
    MODEL_NOT_FOUND = "model_not_found"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    REQUEST_TOO_LARGE = "request_too_large"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    RATE_LIMITED = "rate_limit_exceeded"
    SERVICE_UNAVAILABLE = "service_unavailable"
    ERROR = "error"  # anything else: a bug, or an error without a code

    @classmethod
    def of_error(cls, code: str | None) -> Outcome:
        """The outcome of a request that ended with this error code."""
        if code is None:
            return cls.ERROR
        try:
            return cls(code)
        except ValueError:
            return cls.ERROR
