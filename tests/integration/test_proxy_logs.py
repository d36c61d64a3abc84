"""Operators can follow one request through the logs: every line it causes carries its request id,
and a failed request says which listing failed and after how many attempts."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.support.calls import request_id
from tests.support.gateways import Gateways
from tests.support.market import Market
from tests.support.waiting import await_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def lines_with(logs: str, needle: str) -> list[dict[str, object]]:
    found = []
    for line in logs.splitlines():
        if needle in line and line.startswith("{"):
            found.append(orjson.loads(line))
    return found


async def test_a_failed_request_logs_its_listing_and_attempts_under_its_request_id(
    gateways: Gateways, market: Market
) -> None:
    rid = request_id()
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            gateways.a.base_url + "/chat/completions",
            json={"model": "failing-model", "messages": [{"role": "user", "content": "hi"}]},
            headers={"Authorization": f"Bearer {market.buyer_key}", "x-request-id": rid},
        )
    assert answer.status_code == 502

    async def logged() -> bool:
        return any(line.get("event") == "request_failed" for line in lines_with(gateways.a.logs(), rid))

    await await_until(logged, 5, "the request_failed line")
    mine = lines_with(gateways.a.logs(), rid)
    assert all(line.get("request_id") == rid for line in mine)  # nothing mentions it without carrying it
    [failed] = [line for line in mine if line.get("event") == "request_failed"]
    assert failed["listing"] == market.listings["failing"]["public_id"]
    assert (failed["attempts"], failed["status"], failed["outcome"]) == (1, 502, "upstream_error")
    attempt_lines = [line for line in mine if line.get("event") == "upstream_attempt_failed"]
    assert attempt_lines and attempt_lines[0]["listing"] == failed["listing"] and attempt_lines[0]["attempt"] == 1
