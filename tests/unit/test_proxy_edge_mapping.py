"""`proxy/edge.py`: package errors become OpenAI-shaped HTTP answers in one place; request ids.

A tiny in-memory Starlette app with the edge's handlers and middleware, no network and no pools.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aichat_gateway.accounts import errors as acc
from aichat_gateway.billing import errors as bil
from aichat_gateway.marketplace import errors as mkt
from aichat_gateway.proxy import errors as gw
from aichat_gateway.proxy.edge import exception_handlers, request_context

ACCOUNTS: dict[type[acc.AccountsError], tuple[int, str]] = {
    acc.InvalidInput: (400, "invalid_request_error"),
    acc.WrongPassword: (400, "invalid_request_error"),
    acc.EmailTaken: (409, "invalid_request_error"),
    acc.InvalidCredentials: (401, "authentication_error"),
    acc.AccountDisabled: (401, "authentication_error"),
    acc.Forbidden: (403, "permission_error"),
    acc.NotFound: (404, "invalid_request_error"),
    acc.TooManyAttempts: (429, "rate_limit_error"),
    acc.StoreUnavailable: (503, "api_error"),
}
BILLING: dict[type[bil.BillingError], tuple[int, str]] = {
    bil.InvalidBillingInput: (400, "invalid_request_error"),
    bil.CardDeclined: (400, "invalid_request_error"),
    bil.InsufficientFunds: (402, "insufficient_quota"),
    bil.NotAuthenticated: (401, "authentication_error"),
    bil.NotPermitted: (403, "permission_error"),
    bil.BillingNotFound: (404, "invalid_request_error"),
    bil.Conflict: (409, "invalid_request_error"),
    bil.WebhookRejected: (400, "invalid_request_error"),
    bil.PaymentsUnavailable: (503, "api_error"),
    bil.LedgerError: (500, "server_error"),
}
MARKETPLACE: dict[type[mkt.MarketplaceError], tuple[int, str]] = {
    mkt.InvalidListing: (400, "invalid_request_error"),
    mkt.UnsafeUpstream: (400, "invalid_request_error"),
    mkt.InvalidPreferences: (400, "invalid_request_error"),
    mkt.UpstreamRefused: (400, "invalid_request_error"),
    mkt.DuplicateKey: (409, "invalid_request_error"),
    mkt.ListingNotFound: (404, "invalid_request_error"),
    mkt.NotAuthenticated: (401, "authentication_error"),
    mkt.NotPermitted: (403, "permission_error"),
}
SECRET_IN_A_BUG = "sk-live-should-never-be-shown-0000"


def all_subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= all_subclasses(sub)
    return found


def make_error(cls: type[Exception]) -> Exception:
    if cls is acc.TooManyAttempts:
        return acc.TooManyAttempts("slow down", retry_after=42)
    return cls("what went wrong", param="field")  # type: ignore[call-arg]


RAISED: dict[str, Exception] = {}


async def raiser(request: Request) -> Response:
    raise RAISED[request.path_params["name"]]


async def echo_state(request: Request) -> Response:
    return JSONResponse({"request_id": request.state.request_id})


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(
        routes=[Route("/raise/{name}", raiser, methods=["POST"]), Route("/echo", echo_state)],
        middleware=[Middleware(request_context)],
        exception_handlers=exception_handlers(),
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://edge.test") as c:
        yield c


async def answer_for(
    client: httpx.AsyncClient, error: Exception, headers: dict[str, str] | None = None
) -> httpx.Response:
    name = f"{type(error).__name__}-{id(error)}"
    RAISED[name] = error
    try:
        return await client.post(f"/raise/{name}", headers=headers)
    finally:
        del RAISED[name]


def error_of(answer: httpx.Response) -> dict[str, object]:
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert list(body) == ["error"] and list(body["error"]) == ["message", "type", "param", "code"]
    error: dict[str, object] = body["error"]
    return error


def test_every_accounts_marketplace_and_billing_error_class_is_covered_here() -> None:
    assert all_subclasses(acc.AccountsError) == set(ACCOUNTS)
    assert all_subclasses(mkt.MarketplaceError) == set(MARKETPLACE)
    assert all_subclasses(bil.BillingError) == set(BILLING)


@pytest.mark.parametrize("cls", list(BILLING), ids=lambda c: c.__name__)
async def test_billing_errors_map_to_their_status(client: httpx.AsyncClient, cls: type[bil.BillingError]) -> None:
    error = make_error(cls)
    answer = await answer_for(client, error)
    status, type_ = BILLING[cls]
    assert answer.status_code == status
    assert error_of(answer) == {"message": str(error), "type": type_, "param": "field", "code": cls.code}


@pytest.mark.parametrize("cls", list(ACCOUNTS), ids=lambda c: c.__name__)
async def test_accounts_errors_map_to_their_status(client: httpx.AsyncClient, cls: type[acc.AccountsError]) -> None:
    error = make_error(cls)
    answer = await answer_for(client, error)
    status, type_ = ACCOUNTS[cls]
    assert answer.status_code == status
    assert error_of(answer) == {"message": str(error), "type": type_, "param": error.param, "code": cls.code}


async def test_too_many_attempts_tells_when_to_retry(client: httpx.AsyncClient) -> None:
    answer = await answer_for(client, acc.TooManyAttempts("slow down", retry_after=42))
    assert answer.status_code == 429 and answer.headers["retry-after"] == "42"


@pytest.mark.parametrize("cls", list(MARKETPLACE), ids=lambda c: c.__name__)
async def test_marketplace_errors_map_to_their_status(
    client: httpx.AsyncClient, cls: type[mkt.MarketplaceError]
) -> None:
    answer = await answer_for(client, make_error(cls))
    status, type_ = MARKETPLACE[cls]
    assert answer.status_code == status
    assert error_of(answer) == {"message": "what went wrong", "type": type_, "param": "field", "code": cls.code}


@pytest.mark.parametrize(
    "error",
    [
        gw.InvalidRequest("bad field", param="messages"),
        gw.AuthenticationFailed("no key", code="missing_api_key"),
        gw.ModelNotFound("no model", param="model"),
        gw.PayloadTooLarge("too big"),
        gw.RateLimited("slow", headers={"retry-after": "3"}),
        gw.UpstreamFailed("bad gateway"),
        gw.UpstreamTimeout("too slow"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_gateway_errors_keep_their_own_status_code_and_headers(
    client: httpx.AsyncClient, error: gw.GatewayError
) -> None:
    answer = await answer_for(client, error)
    assert answer.status_code == error.status
    assert error_of(answer) == {"message": error.message, "type": error.type, "param": error.param, "code": error.code}
    for name, value in error.headers.items():
        assert answer.headers[name] == value


async def test_an_unexpected_exception_is_a_500_that_shows_nothing_of_it(client: httpx.AsyncClient) -> None:
    answer = await answer_for(client, RuntimeError(f"db password is {SECRET_IN_A_BUG}"))
    assert answer.status_code == 500
    error = error_of(answer)
    assert (error["type"], error["code"]) == ("server_error", "internal_error")
    assert SECRET_IN_A_BUG not in answer.text and "RuntimeError" not in answer.text


async def test_an_unexpected_exception_answer_still_carries_the_request_id(client: httpx.AsyncClient) -> None:
    answer = await answer_for(client, RuntimeError("boom"), headers={"x-request-id": "trace-abcdef-123"})
    assert answer.status_code == 500
    assert answer.headers.get("x-request-id") == "trace-abcdef-123"


async def test_an_unknown_path_is_an_openai_shaped_404(client: httpx.AsyncClient) -> None:
    answer = await client.get("/v1/nowhere")
    assert answer.status_code == 404
    assert error_of(answer)["code"] == "not_found"


async def test_a_wrong_method_is_an_openai_shaped_405_with_allow(client: httpx.AsyncClient) -> None:
    answer = await client.get("/raise/x")
    assert answer.status_code == 405
    assert error_of(answer)["code"] == "method_not_allowed"
    assert "POST" in answer.headers["allow"]


async def test_every_answer_has_a_fresh_request_id_also_seen_by_the_handler(client: httpx.AsyncClient) -> None:
    first, second = await client.get("/echo"), await client.get("/echo")
    assert first.headers["x-request-id"] == first.json()["request_id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]
    assert first.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize("given", ["abcdefgh", "req_0123456789abcdef", "trace-id:span.1_2", "x" * 128])
async def test_a_sane_incoming_request_id_is_used(client: httpx.AsyncClient, given: str) -> None:
    answer = await client.get("/echo", headers={"x-request-id": given})
    assert answer.headers["x-request-id"] == given == answer.json()["request_id"]


@pytest.mark.parametrize("given", ["short", "x" * 129, "has space x", "semi;colon", "new\\nline1", "é-accented-1"])
async def test_an_insane_incoming_request_id_is_replaced(client: httpx.AsyncClient, given: str) -> None:
    answer = await client.get("/echo", headers={"x-request-id": given.encode()})
    assert answer.headers["x-request-id"] != given
    assert answer.headers["x-request-id"].startswith("req_")


async def test_error_answers_carry_the_request_id_too(client: httpx.AsyncClient) -> None:
    answer = await answer_for(client, gw.ModelNotFound("no model", param="model"))
    assert answer.headers["x-request-id"].startswith("req_")


async def test_a_store_that_is_down_answers_503_not_500(client: httpx.AsyncClient) -> None:
    from redis.exceptions import RedisError

    answer = await answer_for(client, RedisError("Connection closed by server."))
    assert answer.status_code == 503
    assert error_of(answer)["code"] == "service_unavailable"
    assert "Redis" in str(error_of(answer)["message"])
