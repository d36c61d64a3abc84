"""Fake upstream processes (`aichat-gateway fake-upstream`) and the integration session's set of them."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.processes import CLI, Proc, Processes, base_env

KEYED_FAKE_KEY = "sk-the-one-right-key"
# The fake upstream's reply with its default 16 chunks: "fake reply word1 ... word14".
FAKE_WORDS = ["fake", "reply", *[f"word{i}" for i in range(1, 15)]]
FAKE_REPLY = " ".join(FAKE_WORDS)


class FakeUpstream(Proc):
    """A fake provider process; `stats()`/`reset()` read and clear its `/_fake/stats` counters."""

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.url + "/_fake/stats", timeout=5).json()
        return answer

    def reset(self) -> None:
        httpx.post(self.url + "/_fake/reset", timeout=5).raise_for_status()

    def last_body(self) -> dict[str, Any]:
        last = self.stats()["last_request"]
        assert last is not None, f"{self.name} has seen no request"
        body: dict[str, Any] = last["body"]
        return body

    async def astats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            answer: dict[str, Any] = (await client.get(self.url + "/_fake/stats")).json()
            return answer

    async def wait_for_stat(self, key: str, value: int, within: float) -> dict[str, Any]:
        """Poll the stats until stats[key] == value; fail after `within` seconds."""
        last: dict[str, Any] = {}

        async def check() -> bool:
            nonlocal last
            last = await self.astats()
            return bool(last[key] == value)

        deadline = time.monotonic() + within
        while not await check():
            assert time.monotonic() < deadline, f"{self.name}: {key} stayed {last[key]}, wanted {value}: {last}"
            await asyncio.sleep(0.02)
        return last


def spawn_fake(processes: Processes, name: str, *options: str) -> FakeUpstream:
    port = free_port()
    argv = [CLI, "fake-upstream", "--host", "127.0.0.1", "--port", str(port), *options]
    proc = processes.spawn(name, argv, base_env(), port)
    return FakeUpstream(proc.name, proc.popen, proc.port, proc.log_path)


@dataclass(frozen=True)
class Fakes:
    main: FakeUpstream  # default behaviour: 16 words, usage reported, no pacing
    failing: FakeUpstream  # every /v1 request answers 500
    busy: FakeUpstream  # every /v1 request answers 429 with Retry-After: 7
    keyed: FakeUpstream  # accepts only `Authorization: Bearer sk-the-one-right-key`
    sleepy: FakeUpstream  # waits 3 s before answering
    slow: FakeUpstream  # a paced stream: 20 chunks, 100 ms apart (about 2 s in all)
    paced: FakeUpstream  # a long paced stream: 50 chunks, 200 ms apart (10 s if read to the end)
    hanging: FakeUpstream  # waits 10 s before its first byte; only the before-the-first-byte test uses it
    stalling: FakeUpstream  # 3 chunks 1.5 s apart: the strict gateway's 0.5 s read timeout hits mid-stream
    reasoning: FakeUpstream  # 4 words, then 0.4 s later the usage: 4 + 4,994 reasoning completion tokens
