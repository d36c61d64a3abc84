"""Bounded everything: oversized bodies and headers, deep nesting and huge numbers are refused
cleanly (4xx naming the problem), never a crash, a RecursionError or a 500."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from tests.support.attack import (
    Account,
    Counted,
    Gateway,
    Provider,
    assert_error,
    assert_not_server_error,
    listing_body,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60), pytest.mark.asyncio(loop_scope="module")]

CHAT = "/v1/chat/completions"
MIB = 1024 * 1024


async def buyer(gateway: Gateway) -> tuple[Account, dict[str, str]]:
    user = await gateway.user("limits")
    key = await gateway.create_key(user)
    return user, {"Authorization": f"Bearer {key['key']}"}


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], **fields}


async def test_a_v1_body_over_the_limit_is_413_whether_declared_or_streamed(gateway: Gateway) -> None:
    _, auth = await buyer(gateway)
    limit = gateway.app.state.settings.max_body_bytes
    padding = "x" * (limit + 1)
    declared = await gateway.client.post(CHAT, json=chat(padding=padding), headers=auth)
    assert_error(declared, 413)
    body = Counted(b" " * 65536, limit // 65536 + 64)  # 4 MiB more than the limit, undeclared
    streamed = await gateway.client.post(CHAT, content=body.stream(), headers=auth)
    assert_error(streamed, 413)
    assert body.pulled < body.chunks, "refused before reading the whole body"


API_BODIES = [
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/keys"),
    ("POST", "/api/marketplace/listings"),
    ("POST", "/api/marketplace/quote"),
    ("POST", "/api/billing/topups"),
    ("POST", "/api/admin/credits"),
    ("PUT", "/api/seller/payout-account"),
    ("POST", "/api/seller/payouts"),
    ("POST", "/api/webhooks/stripe"),
]


@pytest.mark.parametrize(("method", "path"), API_BODIES)
async def test_an_oversized_api_body_is_refused_without_being_read_to_the_end(
    gateway: Gateway, method: str, path: str
) -> None:
    admin = await gateway.admin()
    body = Counted(b" " * 65536, 64)  # 4 MiB, undeclared (chunked)
    answer = await gateway.client.request(method, path, content=body.stream(), headers=admin.auth)
    assert answer.status_code in (400, 413, 503), answer.text  # 503: the webhook without Stripe configured
    assert body.pulled < body.chunks, f"{path} read all {body.chunks} chunks before refusing"
    gateway.client.cookies.clear()


@pytest.mark.parametrize(("method", "path"), API_BODIES)
async def test_an_api_body_declared_too_large_is_refused(gateway: Gateway, method: str, path: str) -> None:
    admin = await gateway.admin()
    answer = await gateway.client.request(method, path, content=b"{" + b" " * (2 * MIB) + b"}", headers=admin.auth)
    assert answer.status_code in (400, 413, 503), answer.text
    gateway.client.cookies.clear()


def deep(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_objects(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


@pytest.mark.parametrize("nested", [deep(100_000), deep(10_000), deep_objects(5_000), b"[" * 100_000])
async def test_deeply_nested_json_is_a_400_on_v1(gateway: Gateway, nested: bytes) -> None:
    _, auth = await buyer(gateway)
    as_body = await gateway.client.post(CHAT, content=nested, headers=auth)
    assert_error(as_body, 400)
    as_field = b'{"model": "gpt-4o-mini", "messages": ' + nested + b"}"
    assert_error(await gateway.client.post(CHAT, content=as_field, headers=auth), 400)


@pytest.mark.parametrize("levels", [200, 256, 300, 1000, 1023])
async def test_nesting_the_parser_accepts_never_breaks_the_hot_path(
    gateway: Gateway, provider: Provider, levels: int
) -> None:
    """orjson parses up to 1024 levels but writes only 254, and Python recursion stops near 1000:
    a deep value inside an accepted body, relayed to a provider, still gets a clean answer."""
    model = await gateway.routable_model()
    _, key = await gateway.funded_key()
    auth = {"Authorization": f"Bearer {key}"}
    hi = b'[{"role": "user", "content": "hi"}]'
    start = b'{"model": "' + model.encode() + b'", '
    for fields in (
        b'"messages": [{"role": "user", "content": [{"type": "text", "text": ' + deep(levels - 5) + b"}]}]",
        b'"messages": ' + hi + b', "tools": ' + deep(levels - 1),
        b'"messages": ' + hi + b', "metadata": ' + deep_objects(levels - 1),
        b'"messages": ' + hi + b', "provider": {"order": ' + deep(levels - 2) + b"}",
    ):
        answer = await gateway.client.post(CHAT, content=start + fields + b"}", headers=auth)
        assert_not_server_error(answer)


@pytest.mark.parametrize(("method", "path"), API_BODIES)
async def test_deeply_nested_json_is_a_400_on_api(gateway: Gateway, method: str, path: str) -> None:
    admin = await gateway.admin()
    for nested in (deep(5_000), deep_objects(2_000), b'{"name": ' + deep(1_100) + b"}"):
        answer = await gateway.client.request(method, path, content=nested, headers=admin.auth)
        assert answer.status_code in (400, 503), f"{path}: {answer.text}"
    gateway.client.cookies.clear()


async def test_deep_routing_preferences_on_a_key_are_a_400(gateway: Gateway) -> None:
    user = await gateway.user("limits")
    for routing in (deep(1_000), deep_objects(1_000), b'{"order": ' + deep(1_020) + b"}", b'{"only": [1, 2]}'):
        body = b'{"name": "deep", "routing": ' + routing + b"}"
        assert_error(await gateway.client.post("/api/keys", content=body, headers=user.auth), 400)


async def test_a_deep_value_where_an_error_would_quote_it_is_a_400(gateway: Gateway) -> None:
    """Error messages quote short strings only: repr() of a value 1,000 levels deep raises."""
    seller = await gateway.user("limits")
    listing = listing_body(api_key="sk-" + uuid.uuid4().hex)
    for models, param in (
        (b'[{"model": ' + deep(1_020) + b"}]", "models.0.model"),
        (b'[{"model": "m", "upstream_model": ' + deep(1_020) + b"}]", "models.0.upstream_model"),
    ):
        body = orjson.dumps(listing)[:-1] + b', "models": ' + models + b"}"
        body = body.replace(b'"models":[{"model":"gpt-4o-mini"}],', b"")
        answer = await gateway.client.post("/api/marketplace/listings", content=body, headers=seller.auth)
        error = assert_error(answer, 400, param=param)
        assert len(error["message"]) < 200


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 10**6),
        ("n", 2**63 - 1),
        ("n", 0),
        ("n", -1),
        ("n", 1.5),
        ("n", True),
        ("n", "16"),
        ("max_tokens", 10**12),
        ("max_tokens", 2**63 - 1),
        ("max_tokens", 0),
        ("max_tokens", -5),
        ("max_tokens", 1e308),
        ("max_completion_tokens", 10**12),
        ("max_completion_tokens", False),
    ],
)
async def test_a_huge_or_malformed_count_is_a_400_naming_the_field(gateway: Gateway, field: str, value: Any) -> None:
    _, auth = await buyer(gateway)
    answer = await gateway.client.post(CHAT, json=chat(**{field: value}), headers=auth)
    assert_error(answer, 400, param=field)


@pytest.mark.parametrize("number", [b"1" * 400, b"1e999999", b"-" + b"9" * 30, b"18446744073709551616"])
async def test_numbers_beyond_64_bits_are_a_400(gateway: Gateway, number: bytes) -> None:
    _, auth = await buyer(gateway)
    for field in (b"n", b"max_tokens"):
        body = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "' + field + b'": ' + number
        answer = await gateway.client.post(CHAT, content=body + b"}", headers=auth)
        assert_error(answer, 400)


async def test_more_messages_than_allowed_is_a_400(gateway: Gateway) -> None:
    _, auth = await buyer(gateway)
    many = [{"role": "user", "content": "x"}] * (gateway.app.state.settings.max_messages + 1)
    assert_error(await gateway.client.post(CHAT, json=chat(messages=many), headers=auth), 400, param="messages")


async def test_huge_headers_are_refused_or_ignored_never_a_500(gateway: Gateway) -> None:
    user, auth = await buyer(gateway)
    junk = "x" * (256 * 1024)
    for answer in (
        await gateway.client.get("/v1/models", headers={**auth, "x-junk": junk}),
        await gateway.client.get("/v1/models", headers={"Authorization": "Bearer agw-" + junk}),
        await gateway.client.get("/api/keys", headers={"Authorization": "Bearer " + junk}),
        await gateway.client.get("/api/keys", headers={**user.auth, "x-junk": junk}),
        await gateway.client.get("/api/keys", headers={"cookie": f"aichat_session={junk}; aichat_csrf={junk}"}),
        await gateway.client.get("/healthz", headers={"x-request-id": junk}),
        await gateway.client.post(CHAT, json=chat(), headers={**auth, "x-request-id": junk, "content-length": junk}),
    ):
        assert_not_server_error(answer)
        assert junk not in answer.headers.get("x-request-id", ""), "an insane request id is not echoed"


async def test_a_quote_with_a_huge_prompt_count_or_max_tokens_is_a_400(gateway: Gateway) -> None:
    for body in (
        {"model": "gpt-4o-mini", "prompt_tokens": 10**15},
        {"model": "gpt-4o-mini", "prompt_tokens": 1, "max_tokens": 10**15},
        {"model": "gpt-4o-mini", "prompt_tokens": -1},
        {"model": "x" * 100_000, "prompt_tokens": 1},
    ):
        answer = await gateway.client.post("/api/marketplace/quote", content=orjson.dumps(body))
        assert answer.status_code in (400, 404), answer.text


@pytest.mark.parametrize("path", ["/api/auth/login", CHAT, "/api/marketplace/listings", "/api/marketplace/quote"])
async def test_a_content_length_of_non_ascii_digits_is_not_a_500(gateway: Gateway, path: str) -> None:
    """HTTP parsers in front refuse it too; the app must not depend on that."""
    user, auth = await buyer(gateway)
    headers = [(b"content-length", "²".encode("latin-1")), (b"authorization", auth["Authorization"].encode())]
    if path.startswith("/api/marketplace/listings"):
        headers[1] = (b"authorization", user.auth["Authorization"].encode())
    assert_not_server_error(await gateway.client.post(path, content=b"{}", headers=headers))
