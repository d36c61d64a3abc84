"""An Anthropic listing serves OpenAI SDK clients: the gateway translates both ways."""

from __future__ import annotations

import httpx
import pytest
from openai import AsyncOpenAI

from tests.support.fakes import FAKE_REPLY, Fakes
from tests.support.market import Market
from tests.support.processes import Proc

MODEL = "claude-3-5-haiku"


@pytest.fixture
async def sdk(gateway: Proc, market: Market) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.base_url, api_key=market.buyer_key, max_retries=0, timeout=10)


async def test_a_non_streamed_answer_comes_back_in_openai_shape(sdk: AsyncOpenAI, fakes: Fakes) -> None:
    answer = await sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert answer.choices[0].message.content == FAKE_REPLY
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    sent = fakes.main.last_body()
    assert sent["system"] == "Be brief."  # the system message moved to Anthropic's field
    assert "max_tokens" in sent


async def test_a_streamed_answer_comes_back_as_openai_chunks_with_usage(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True, stream_options={"include_usage": True}
    )
    text, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(text) == FAKE_REPLY
    assert usage is not None and usage.completion_tokens > 0


async def test_tool_calls_are_translated_back(sdk: AsyncOpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    answer = await sdk.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], tools=tools)
    call = answer.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert (answer.choices[0].finish_reason, call.function.name) == ("tool_calls", "lookup")


def test_a_request_anthropic_cannot_express_is_a_400_naming_the_field(gateway: Proc, market: Market) -> None:
    answer = httpx.post(
        gateway.base_url + "/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "n": 2},
        headers={"Authorization": f"Bearer {market.buyer_key}"},
        timeout=10,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "n"
