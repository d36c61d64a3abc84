"""Quotes: the cost range of a request at the offer that would serve it now."""

from __future__ import annotations

import httpx

from tests.support.market import Market
from tests.support.processes import Proc


def ask(gateway: Proc, body: object) -> httpx.Response:
    return httpx.post(gateway.url + "/api/marketplace/quote", json=body, timeout=10)


def test_a_quote_prices_the_prompt_and_the_worst_case_answer(gateway: Proc, market: Market) -> None:
    answer = ask(gateway, {"model": "gpt-4o-mini", "prompt_tokens": 1000, "max_tokens": 1000})
    assert answer.status_code == 200, answer.text
    quote = answer.json()
    # gpt-4o-mini at list price: 0.15 in, 0.60 out per million tokens.
    assert quote["estimated_cost_usd"] == {"min": "0.000150", "max": "0.000750"}
    assert quote["offer_id"] == market.listings["main"]["public_id"]


def test_messages_are_counted_when_no_prompt_tokens_are_given(gateway: Proc, market: Market) -> None:
    answer = ask(gateway, {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world"}]})
    assert answer.status_code == 200
    assert answer.json()["prompt_tokens"] > 2
    assert answer.json()["max_tokens"] == 16384  # the catalog's output limit


def test_a_quote_for_an_unserved_model_is_404(gateway: Proc, market: Market) -> None:
    answer = ask(gateway, {"model": "no-such-model", "prompt_tokens": 1})
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "model_not_found"


def test_a_bad_quote_request_names_the_field(gateway: Proc, market: Market) -> None:
    for body, param in (
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"model": "gpt-4o-mini", "prompt_tokens": -1}, "prompt_tokens"),
        ({"model": "gpt-4o-mini", "prompt_tokens": 1, "colour": "red"}, "colour"),
    ):
        answer = ask(gateway, body)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["param"] == param
