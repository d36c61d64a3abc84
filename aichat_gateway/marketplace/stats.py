"""Observed performance of listings: latency, time to first token and success rate per minute.

Every finished request adds to its listing's bucket for the current minute (a Redis hash, kept two
hours), queued on the same pipeline as the usage event so it costs no extra round trip. Latencies
go into fixed log-spaced bins, so a percentile over any window is a sum of counters: exact to
the bin, mergeable across processes, and O(bins) to read. The offers page reads the last hour.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from aichat_gateway.redislua import Queue

# Upper bounds of the latency bins, in milliseconds (the last bin is everything above).
BIN_UPPER_MS = (25, 50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200)
_TTL_SECONDS = 2 * 3600
# One command however many fields: +1 on each field named in ARGV[2..], then the expiry.
# Sent with EVAL, not as a `LuaScript` (EVALSHA): then it can never fail with NOSCRIPT after a Redis
# restart, so nobody has to resolve its reply, and the short body costs Redis next to nothing to hash.
_INCREMENT = """
for i = 2, #ARGV do redis.call('HINCRBY', KEYS[1], ARGV[i], 1) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""
WINDOW_MINUTES = 60


def minute_of(now: float) -> int:
    return int(now // 60)


def bin_of(milliseconds: int) -> int:
    return bisect.bisect_left(BIN_UPPER_MS, milliseconds)


def bucket_key(prefix: str, listing_id: str, minute: int) -> str:
    return f"{{{prefix}:l:{listing_id}}}:stats:{minute}"


def increments(ok: bool, latency_ms: int, ttft_ms: int) -> list[str]:
    """Pure: the hash fields one finished request adds 1 to."""
    fields = ["n", f"lat{bin_of(latency_ms)}"]
    if ok:
        fields.append("ok")
    if ttft_ms >= 0:
        fields.append(f"ttft{bin_of(ttft_ms)}")
    return fields


@dataclass(frozen=True, slots=True)
class ListingStats:
    requests: int
    success_rate: float | None
    p50_latency_ms: int | None
    p50_ttft_ms: int | None


def percentile_from_bins(counts: Sequence[int], fraction: float) -> int | None:
    """Pure: the upper bound (ms) of the bin holding the given fraction of observations."""
    total = sum(counts)
    if total == 0:
        return None
    threshold = fraction * total
    running = 0
    for index, count in enumerate(counts):
        running += count
        if running >= threshold:
            return BIN_UPPER_MS[index] if index < len(BIN_UPPER_MS) else BIN_UPPER_MS[-1] * 2
    return None


def summarise(buckets: Sequence[Mapping[str, int]]) -> ListingStats:
    """Pure: merge minute buckets into the figures the offers page shows."""
    merged: dict[str, int] = {}
    for bucket in buckets:
        for name, value in bucket.items():
            merged[name] = merged.get(name, 0) + value
    requests = merged.get("n", 0)
    bins = len(BIN_UPPER_MS) + 1
    return ListingStats(
        requests=requests,
        success_rate=round(merged.get("ok", 0) / requests, 4) if requests else None,
        p50_latency_ms=percentile_from_bins([merged.get(f"lat{i}", 0) for i in range(bins)], 0.5),
        p50_ttft_ms=percentile_from_bins([merged.get(f"ttft{i}", 0) for i in range(bins)], 0.5),
    )


class ListingStatsStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def record_in(self, pipe: Queue, listing_id: str, now: float, ok: bool, latency_ms: int, ttft_ms: int) -> None:
        """Queue one request's figures on a pipeline the caller executes."""
        key = bucket_key(self._prefix, listing_id, minute_of(now))
        pipe.execute_command("EVAL", _INCREMENT, 1, key, _TTL_SECONDS, *increments(ok, latency_ms, ttft_ms))

    async def last_hour(self, listing_ids: Sequence[str], now: float) -> dict[str, ListingStats]:
        current = minute_of(now)
        minutes = range(current - WINDOW_MINUTES + 1, current + 1)
        pipe = self._redis.pipeline(transaction=False)
        for listing_id in listing_ids:
            for minute in minutes:
                pipe.hgetall(bucket_key(self._prefix, listing_id, minute))
        raw: list[dict[Any, Any]] = await pipe.execute()
        result: dict[str, ListingStats] = {}
        for index, listing_id in enumerate(listing_ids):
            chunk = raw[index * WINDOW_MINUTES : (index + 1) * WINDOW_MINUTES]
            result[listing_id] = summarise([{_text(k): int(v) for k, v in b.items()} for b in chunk])
        return result


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
