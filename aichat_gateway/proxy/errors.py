"""Errors raised on the OpenAI-compatible surface, each with OpenAI's status, type and code.

GatewayError
├── InvalidRequest        400 invalid_request_error (bad JSON, missing or out-of-range fields)
├── AuthenticationFailed  401 invalid_api_key (missing, unknown or revoked gateway key)
├── PermissionDenied      403
├── ModelNotFound         404 model_not_found (no active listing serves the model)
├── NotFound              404 (unknown path)
├── MethodNotAllowed      405
├── PayloadTooLarge       413 (body over GATEWAY_MAX_BODY_BYTES)
├── InsufficientQuota     402 insufficient_quota (balance or a key spend cap too low)
├── RateLimited           429 rate_limit_exceeded
├── ClientDisconnected    499 (the buyer left before the answer; nobody reads this response)
├── UpstreamFailed        502 upstream_error (every candidate failed or answered garbage)
├── Unavailable           503 service_unavailable (no capacity, Redis/Postgres down)
└── UpstreamTimeout       504 upstream_timeout
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None, code: str | None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class AuthenticationFailed(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "invalid_request_error"
    code = "permission_denied"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class InsufficientQuota(GatewayError):
    """402, not OpenAI's 429: the SDKs retry a 429 by themselves, and no retry adds money."""

    status = 402
    type = "insufficient_quota"
    code = "insufficient_quota"


class RateLimited(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class ClientDisconnected(GatewayError):
    status = 499
    type = "invalid_request_error"
    code = "client_disconnected"


class UpstreamFailed(GatewayError):
    status = 502
    type = "api_error"
    code = "upstream_error"


class Unavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "service_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"
