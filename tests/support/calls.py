"""Calling a gateway process as a client would: request ids, a stream left early, the error shape."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.processes import Proc


async def read_then_leave(gateway: Proc, key: str, model: str, events: int, rid: str | None = None) -> list[str]:
    """Read `events` SSE data lines of a stream, then close the connection."""
    headers = {"Authorization": f"Bearer {key}", **({"x-request-id": rid} if rid else {})}
    got: list[str] = []
    async with httpx.AsyncClient(timeout=10) as client:
        body = {"model": model, "messages": [{"role": "user", "content": "tell me a long story"}], "stream": True}
        async with client.stream("POST", gateway.base_url + "/chat/completions", json=body, headers=headers) as answer:
            assert answer.status_code == 200
            async for line in answer.aiter_lines():
                if line.startswith("data:"):
                    got.append(line)
                    if len(got) == events:
                        break
    return got


def request_id() -> str:
    """A sane request id for the caller to send (the gateway echoes it)."""
    return f"test-{uuid.uuid4().hex}"


def assert_openai_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The response is `{"error": {"message", "type", "param", "code"}}` with this status (and code/param)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    if code is not None:
        assert error["code"] == code, error
    assert error["param"] == param, error
    assert response.headers.get("x-request-id"), "every response carries x-request-id"
    return error
