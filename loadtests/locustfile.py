"""Locust load test: buyers of the gateway, as personas with weights.

Why personas rather than one request mix: the gateway's costs differ by request shape (a short
answer is one hold and one settle; a long stream holds its hold and capacity lease for seconds and
renews them between chunks; a burst at a rate-limited listing exercises the capacity scripts and
the 429 path), so the report shows latency and failures per shape.

    short question  (6)  non-streamed, a one-line question to the first model
    long stream     (3)  stream=true with include_usage, read to the end: [DONE], usage.cost, chunk count
    mixed models    (2)  a random model of LOCUST_MODELS, streamed or not
    burst           (1)  LOCUST_BURST_SIZE concurrent requests to LOCUST_BURST_MODEL, whose listing has an
                         rpm limit: 429 rate_limit_exceeded is expected there and counted as a success

Configuration (environment, or the matching command-line option):
    GATEWAY_URL          --gateway-url   default http://127.0.0.1:8000/v1 (locust's --host wins)
    LOCUST_API_KEYS      --api-keys      comma-separated gateway keys; users take them round-robin
    LOCUST_MODELS        --models        default gpt-4o-mini,gpt-4o
    LOCUST_BURST_MODEL   --burst-model   default gpt-4.1-mini (served only by the rpm-limited listing)
    LOCUST_BURST_SIZE    --burst-size    default 10

Request names in the report: the persona (and model), and for a request that did not get what it
expected, the persona followed by `[status code]` (`[402 insufficient_quota]`, `[stream no_done]`),
so the stats and failures CSVs show which errors happened. `make loadtest` starts everything and
runs this headless; see loadtests/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gevent.pool import Pool
from locust import FastHttpUser, between, events, task
from locust.contrib.fasthttp import ResponseContextManager
from locust.env import Environment

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8000/v1"
DEFAULT_MODELS = "gpt-4o-mini,gpt-4o"
DEFAULT_BURST_MODEL = "gpt-4.1-mini"
DEFAULT_BURST_SIZE = 10
MAX_BURST_SIZE = 50  # the burst user's connection pool; a burst larger than this would queue in the client
CHAT_PATH = "/chat/completions"

QUESTIONS = (
    "What is the capital of Portugal?",
    "Give me a synonym for 'quick'.",
    "How many minutes are in a day?",
    "Translate 'good morning' into German.",
    "Is 97 a prime number?",
)
# ~400 words of context: long streams also carry long prompts (token counting, holds sized by them).
LONG_CONTEXT = " ".join(
    f"Paragraph {i}: the quarterly report lists revenue, costs, churn and hiring plans for region {i}."
    for i in range(25)
)


# ---- configuration ----------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the users do, read once per test run. Keys are handed out round-robin, so users spread evenly
    over them (locust numbers no users; the counter lives here, on the object every user shares)."""

    api_keys: tuple[str, ...]
    models: tuple[str, ...]
    burst_model: str
    burst_size: int
    _turn: Iterator[int] = field(default_factory=itertools.count, repr=False)

    def next_key(self) -> str:
        return self.api_keys[next(self._turn) % len(self.api_keys)]


def split_list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def plan_from(values: Mapping[str, str]) -> Plan:
    """A Plan from option values (names as the environment variables); refuses a run that cannot work."""
    keys = split_list(values.get("LOCUST_API_KEYS", ""))
    if not keys:
        raise SystemExit("LOCUST_API_KEYS (or --api-keys) is empty: give at least one gateway key (agw-...)")
    models = split_list(values.get("LOCUST_MODELS") or DEFAULT_MODELS)
    size = int(values.get("LOCUST_BURST_SIZE") or DEFAULT_BURST_SIZE)
    if not 1 <= size <= MAX_BURST_SIZE:
        raise SystemExit(f"LOCUST_BURST_SIZE must be 1..{MAX_BURST_SIZE}")
    return Plan(keys, models, values.get("LOCUST_BURST_MODEL") or DEFAULT_BURST_MODEL, size)


# (option, environment variable, default, secret)
OPTIONS = (
    ("--gateway-url", "GATEWAY_URL", DEFAULT_GATEWAY_URL, False),
    ("--api-keys", "LOCUST_API_KEYS", "", True),
    ("--models", "LOCUST_MODELS", DEFAULT_MODELS, False),
    ("--burst-model", "LOCUST_BURST_MODEL", DEFAULT_BURST_MODEL, False),
    ("--burst-size", "LOCUST_BURST_SIZE", str(DEFAULT_BURST_SIZE), False),
)


@events.init_command_line_parser.add_listener
def _add_options(parser: Any, **_: Any) -> None:
    for flag, env_var, default, secret in OPTIONS:
        parser.add_argument(flag, type=str, env_var=env_var, default=default, is_secret=secret)


def _option_values(options: argparse.Namespace | None) -> dict[str, str]:
    """Option values by environment-variable name; the environment alone when locust runs as a library."""
    if options is None:
        return dict(os.environ)
    return {env_var: str(getattr(options, flag[2:].replace("-", "_"))) for flag, env_var, _, _ in OPTIONS}


@events.init.add_listener
def _default_host(environment: Environment, **_: Any) -> None:
    if not environment.host:
        environment.host = _option_values(environment.parsed_options).get("GATEWAY_URL") or DEFAULT_GATEWAY_URL


@events.test_start.add_listener
def _read_plan(environment: Environment, **_: Any) -> None:
    # At test start rather than init, so values edited in the web UI apply.
    GatewayUser.plan = plan_from(_option_values(environment.parsed_options))


# ---- checking answers (pure) ------------------------------------------------------------------------


def error_label(status: int, body: bytes) -> str:
    """`<status> <OpenAI error code>` (the type when the code is null), or just the status for a body
    that is not an OpenAI error: the name under which a failure is counted."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code = error.get("code") or error.get("type")
        if isinstance(code, str) and code:
            return f"{status} {code}"
    return f"{status} {'connection_error' if status == 0 else 'unexpected_body'}"


def completion_problem(body: bytes) -> str | None:
    """What is wrong with a non-streamed 200 answer, or None."""
    try:
        answer = json.loads(body)
    except ValueError:
        return "not_json"
    if not isinstance(answer, dict) or answer.get("object") != "chat.completion":
        return "not_a_completion"
    if not answer.get("choices"):
        return "no_choices"
    usage = answer.get("usage")
    if not isinstance(usage, dict) or "cost" not in usage:
        return "no_usage_cost"
    return None


@dataclass
class StreamTally:
    """An SSE body read incrementally: content chunks, the usage chunk with its cost, [DONE] last, and an
    error event if the gateway had to end the stream with one."""

    chunks: int = 0
    bytes_read: int = 0
    done: bool = False
    cost_seen: bool = False
    error_code: str | None = None
    malformed: bool = False
    after_done: bool = False
    _pending: bytes = b""

    def feed(self, data: bytes) -> None:
        self.bytes_read += len(data)
        lines = (self._pending + data).split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            self._line(line.rstrip(b"\r"))

    def finish(self) -> None:
        if self._pending:
            self._line(self._pending.rstrip(b"\r"))
            self._pending = b""

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"data:"):
            return  # blank separators, comments (keep-alives), event:/id: fields
        if self.done:
            self.after_done = True
        payload = line[5:].strip()
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            event = json.loads(payload)
        except ValueError:
            self.malformed = True
            return
        if not isinstance(event, dict):
            self.malformed = True
        elif isinstance(event.get("error"), dict):
            self.error_code = str(event["error"].get("code") or event["error"].get("type") or "error")
        elif event.get("choices"):
            self.chunks += 1
        elif isinstance(event.get("usage"), dict):
            self.cost_seen = self.cost_seen or "cost" in event["usage"]

    def problem(self) -> str | None:
        """What is wrong with the finished stream, or None."""
        if self.error_code is not None:
            return f"stream {self.error_code}"
        if self.malformed:
            return "stream malformed_event"
        if not self.done or self.after_done:
            return "stream no_done"
        if self.chunks == 0:
            return "stream no_chunks"
        if not self.cost_seen:
            return "stream no_usage_cost"
        return None


def chat_body(model: str, prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    # max_tokens bounds the hold: without it the gateway reserves the model's whole output limit.
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    body["max_tokens"] = max_tokens
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# ---- users ------------------------------------------------------------------------------------------


class GatewayUser(FastHttpUser):
    """A buyer with one gateway key. Every request goes through chat(), which names and judges it."""

    abstract = True
    network_timeout = 120.0
    connection_timeout = 10.0
    plan: ClassVar[Plan]
    api_key: str

    def on_start(self) -> None:
        self.api_key = self.plan.next_key()

    def chat(self, label: str, body: dict[str, Any], expected: frozenset[str] = frozenset()) -> None:
        """POST one chat completion and report it as `label`, or as `label [problem]`. A problem in
        `expected` (like "429 rate_limit_exceeded") is reported under its name but as a success."""
        stream = bool(body.get("stream"))
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept-Encoding": "identity"}
        started = time.perf_counter()
        with self.client.post(
            CHAT_PATH, json=body, headers=headers, name=label, stream=stream, catch_response=True
        ) as response:
            problem = self._judge(response, stream)
            if stream:  # locust stops the clock at the headers; a stream's time is to its last byte
                response.request_meta["response_time"] = (time.perf_counter() - started) * 1000
            if problem is None:
                response.success()
                return
            response.request_meta["name"] = f"{label} [{problem}]"
            if problem in expected:
                response.success()
            else:  # a connection failure carries its exception (refused, reset, timed out)
                error = getattr(response, "error", None)
                response.failure(f"{problem}: {error!r}" if response.status_code == 0 and error else problem)

    def _judge(self, response: ResponseContextManager, stream: bool) -> str | None:
        status = response.status_code
        if status != 200:
            return error_label(status, (response.content or b"") if status else b"")
        if not stream:
            return completion_problem(response.content or b"")
        tally = StreamTally()
        for data in response.iter_content(chunk_size=4096, decode_content=False):
            tally.feed(data if isinstance(data, bytes) else data.encode())
        tally.finish()
        response.request_meta["response_length"] = tally.bytes_read
        return tally.problem()


class ShortQuestionUser(GatewayUser):
    weight = 6
    wait_time = between(0.5, 2.0)

    @task
    def short_question(self) -> None:
        body = chat_body(self.plan.models[0], random.choice(QUESTIONS), max_tokens=128, stream=False)
        self.chat("short question", body)


class LongStreamUser(GatewayUser):
    weight = 3
    wait_time = between(1.0, 3.0)

    @task
    def long_stream(self) -> None:
        prompt = LONG_CONTEXT + "\n\nSummarise the report region by region."
        self.chat("long stream", chat_body(self.plan.models[0], prompt, max_tokens=1024, stream=True))


class MixedModelUser(GatewayUser):
    weight = 2
    wait_time = between(0.5, 2.0)

    @task
    def mixed(self) -> None:
        model, stream = random.choice(self.plan.models), random.random() < 0.5
        body = chat_body(model, random.choice(QUESTIONS), max_tokens=256, stream=stream)
        self.chat(f"mixed {model} {'stream' if stream else 'json'}", body)


class BurstUser(GatewayUser):
    """Quick bursts at a listing with an rpm limit: past the limit the gateway answers 429
    rate_limit_exceeded with Retry-After, which is the behaviour under test, not a failure."""

    weight = 1
    wait_time = between(3.0, 6.0)
    concurrency = MAX_BURST_SIZE
    EXPECTED: ClassVar[frozenset[str]] = frozenset({"429 rate_limit_exceeded"})

    @task
    def burst(self) -> None:
        body = chat_body(self.plan.burst_model, random.choice(QUESTIONS), max_tokens=64, stream=False)
        pool = Pool(self.plan.burst_size)
        for _ in range(self.plan.burst_size):
            pool.spawn(self.chat, "burst", body, self.EXPECTED)
        pool.join(raise_error=True)
