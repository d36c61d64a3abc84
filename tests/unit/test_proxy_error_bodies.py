"""`proxy/errors.py`: every gateway error has OpenAI's body shape, its status, type and code."""

from __future__ import annotations

import orjson
import pytest

from aichat_gateway.proxy import errors

EXPECTED: dict[type[errors.GatewayError], tuple[int, str, str]] = {
    errors.GatewayError: (500, "server_error", "internal_error"),
    errors.InvalidRequest: (400, "invalid_request_error", "invalid_request"),
    errors.AuthenticationFailed: (401, "invalid_request_error", "invalid_api_key"),
    errors.PermissionDenied: (403, "invalid_request_error", "permission_denied"),
    errors.ModelNotFound: (404, "invalid_request_error", "model_not_found"),
    errors.NotFound: (404, "invalid_request_error", "not_found"),
    errors.MethodNotAllowed: (405, "invalid_request_error", "method_not_allowed"),
    errors.PayloadTooLarge: (413, "invalid_request_error", "request_too_large"),
    errors.InsufficientQuota: (402, "insufficient_quota", "insufficient_quota"),
    errors.RateLimited: (429, "rate_limit_error", "rate_limit_exceeded"),
    errors.ClientDisconnected: (499, "invalid_request_error", "client_disconnected"),
    errors.UpstreamFailed: (502, "api_error", "upstream_error"),
    errors.Unavailable: (503, "api_error", "service_unavailable"),
    errors.UpstreamTimeout: (504, "api_error", "upstream_timeout"),
}


def all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= all_subclasses(sub)
    return found


def test_every_gateway_error_class_is_covered_here() -> None:
    assert all_subclasses(errors.GatewayError) | {errors.GatewayError} == set(EXPECTED)


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_each_error_has_its_status_type_and_code(cls: type[errors.GatewayError]) -> None:
    error = cls("something went wrong")
    assert (error.status, error.type, error.code) == EXPECTED[cls]


@pytest.mark.parametrize("cls", list(EXPECTED), ids=lambda c: c.__name__)
def test_each_error_body_is_openai_shaped(cls: type[errors.GatewayError]) -> None:
    _, type_, code = EXPECTED[cls]
    body = orjson.loads(cls("something went wrong", param="messages").body())
    assert body == {"error": {"message": "something went wrong", "type": type_, "param": "messages", "code": code}}


def test_param_defaults_to_null() -> None:
    body = orjson.loads(errors.InvalidRequest("bad").body())
    assert body["error"]["param"] is None
    assert list(body["error"]) == ["message", "type", "param", "code"]


def test_a_code_given_at_raise_time_overrides_the_class_code_for_that_error_only() -> None:
    error = errors.AuthenticationFailed("no key", code="missing_api_key")
    assert orjson.loads(error.body())["error"]["code"] == "missing_api_key"
    assert errors.AuthenticationFailed("other").code == "invalid_api_key"


def test_headers_are_kept_as_a_copy() -> None:
    given = {"retry-after": "3"}
    error = errors.RateLimited("slow down", headers=given)
    given["retry-after"] = "99"
    assert error.headers == {"retry-after": "3"}
    assert errors.RateLimited("x").headers == {}


def test_the_message_is_the_exceptions_text() -> None:
    error = errors.UpstreamFailed("no upstream")
    assert str(error) == error.message == "no upstream"


def test_error_body_escapes_what_it_is_given() -> None:
    raw = errors.error_body('quote " and \n newline', "invalid_request_error", None, None)
    assert orjson.loads(raw)["error"]["message"] == 'quote " and \n newline'
