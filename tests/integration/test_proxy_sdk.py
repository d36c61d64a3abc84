"""The `openai` SDK against a running gateway: what a buyer sees with `base_url=gateway/v1`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.support.fakes import FAKE_REPLY, FakeUpstream
from tests.support.market import Market
from tests.support.processes import Proc

pytestmark = pytest.mark.integration

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture
async def sdk(gateway: Proc, market: Market) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=gateway.base_url, api_key=market.buyer_key, max_retries=0, timeout=10) as client:
        yield client


async def test_the_sdk_gets_a_non_streamed_chat_completion(sdk: AsyncOpenAI) -> None:
    answer = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == FAKE_REPLY
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.completion_tokens == 16


async def test_the_sdk_gets_a_streamed_chat_completion_whose_pieces_make_the_whole_reply(
    sdk: AsyncOpenAI,
) -> None:
    stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == FAKE_REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_a_stream_with_include_usage_ends_with_a_usage_chunk(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (len("hello there") // 4 + 1, 16)


async def test_a_stream_without_include_usage_gets_no_usage_chunk_although_the_gateway_asked_for_it(
    sdk: AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert fake_upstream.last_body()["stream_options"] == {"include_usage": True}
    assert chunks and all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "the usage-only chunk (empty choices) must be withheld"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == FAKE_REPLY


async def test_the_sdk_gets_a_tool_call_in_a_non_streamed_answer(sdk: AsyncOpenAI) -> None:
    answer = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER_TOOL])
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", "{}")  # type: ignore[union-attr]


async def test_the_sdk_gets_a_tool_call_in_a_streamed_answer(sdk: AsyncOpenAI) -> None:
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, tools=[WEATHER_TOOL], stream=True
    )
    names: list[str] = []
    arguments: list[str] = []
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names.append(call.function.name)
                if call.function and call.function.arguments:
                    arguments.append(call.function.arguments)
            finish = choice.finish_reason or finish
    assert names == ["get_weather"]
    assert "".join(arguments) == "{}"
    assert finish == "tool_calls"


async def test_the_sdk_gets_embeddings_which_it_asks_for_in_base64(
    sdk: AsyncOpenAI, fake_upstream: FakeUpstream
) -> None:
    answer = await sdk.embeddings.create(model="text-embedding-3-small", input=["first", "second"])
    assert fake_upstream.last_body()["encoding_format"] == "base64"
    assert [d.index for d in answer.data] == [0, 1]
    assert all(len(d.embedding) == 8 and all(isinstance(x, float) for x in d.embedding) for d in answer.data)
    assert answer.usage.prompt_tokens > 0


async def test_the_sdk_lists_the_listed_models(sdk: AsyncOpenAI) -> None:
    models = [model async for model in sdk.models.list()]
    ids = {m.id for m in models}
    assert {"gpt-4o-mini", "gpt-4o", "text-embedding-3-small"} <= ids
    assert all(m.object == "model" for m in models)


async def test_many_concurrent_streams_each_get_the_whole_reply(sdk: AsyncOpenAI) -> None:
    async def one() -> str:
        stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert await asyncio.gather(*(one() for _ in range(25))) == [FAKE_REPLY] * 25
