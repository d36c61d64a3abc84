"""The meter: one usage event per finished `/v1` request, appended to a Redis Stream.

The settlement worker (money issue) turns these into charges. Appending is one XADD: the only
Redis round trip this step adds to the hot path. Each entry holds the event as one JSON
object of flat string fields (`redis-cli XRANGE` shows it readably).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis

from aichat_gateway.redislua import Queue

# Enough for several hours at thousands of requests per second; the settler trims what it consumed.
_STREAM_MAXLEN = 5_000_000


@dataclass(frozen=True, slots=True)
class UsageEvent:
    request_id: str
    key_id: str
    user_id: str
    listing_id: str  # "" when no listing was reached
    model: str
    prompt_tokens: int
    completion_tokens: int
    usage_source: str  # "upstream" or "estimated"
    latency_ms: int
    ttft_ms: int  # time to first token (streams) or to the full answer; -1 if none
    outcome: str  # ok | upstream_error | client_error | client_disconnected | no_listing | ...
    status: int
    attempts: int
    stream: bool
    ts_ms: int
    # Money (micro-USD). The seller is named so settlement can credit them without asking the
    # marketplace who served; the hold is kept beside the cost so the audit can check cost <= held.
    seller_id: str = ""  # "" when no listing was reached
    cost_micro: int = 0
    held_micro: int = 0
    # Cost beyond the hold (the provider reported more than the worst case): the seller's anyway.
    beyond_hold_micro: int = 0

    def fields(self) -> dict[str, str]:
        # Not dataclasses.asdict: it deep-copies and shows up in hot-path profiles.
        return {name: _text(getattr(self, name)) for name in self.__dataclass_fields__}


def _text(value: object) -> str:
    return str(int(value)) if isinstance(value, bool) else str(value)


EVENT_FIELD = "e"


def decode_entry(fields: Mapping[bytes, bytes]) -> dict[str, str]:
    """A stream entry's fields back into the event's flat string fields."""
    decoded: dict[str, str] = orjson.loads(fields[EVENT_FIELD.encode()])
    return decoded


def stream_key(prefix: str) -> str:
    return f"{prefix}:usage"


class Meter:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self.stream = stream_key(prefix)

    def record_in(self, pipe: Queue, event: UsageEvent) -> None:
        """Queue the event on a pipeline the caller executes (with whatever else ends the request).

        One stream field holding the event as JSON: redis-py packs every argument in Python, and
        thirty small ones cost more on the hot path than one JSON document (read it back with
        `decode_entry`)."""
        pipe.execute_command(
            "XADD", self.stream, "MAXLEN", "~", _STREAM_MAXLEN, "*", EVENT_FIELD, orjson.dumps(event.fields())
        )
