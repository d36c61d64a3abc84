"""Prometheus metrics, one registry per app (no globals); every package may count into it.

With several uvicorn workers, `serve` sets PROMETHEUS_MULTIPROC_DIR so every worker writes to
shared files and `/metrics` (whichever worker answers; server/ops.py) aggregates them all.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[Any, ...], Any] = {}
        r = self.registry
        self.requests = Counter(
            "gateway_requests",
            "Requests on /v1 by route, model and HTTP status",
            ["route", "model", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "gateway_request_duration_seconds",
            "Time to the end of the answer",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "Time to the first streamed byte",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "gateway_upstream_duration_seconds",
            "Upstream time to response headers, by outcome",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Per listing (its public id): bounded by the marketplace's size, not by what clients send.
        self.listing_attempts = Counter(
            "gateway_listing_attempts", "Upstream attempts by listing and outcome", ["listing", "outcome"], registry=r
        )
        self.listing_latency = Histogram(
            "gateway_listing_upstream_duration_seconds",
            "Upstream time to response headers by listing",
            ["listing"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.usage_events_lost = Counter(
            "gateway_usage_events_lost",
            "Served requests whose usage event Redis lost before it was settled (Redis restarted empty)",
            registry=r,
        )
        self.balance_repairs = Counter(
            "gateway_balance_repairs", "Buyer hot balances the reconciler repaired to match Postgres", registry=r
        )
        self.settlement_backlog = Gauge(
            "gateway_settlement_backlog",
            "Usage events not yet settled into Postgres (the stream's unread and unacknowledged entries)",
            registry=r,
            multiprocess_mode="max",  # every worker sees the same stream: the newest reading is the answer
        )
        self.inflight_streams = Gauge(
            "gateway_inflight_streams", "Streams being relayed now", registry=r, multiprocess_mode="livesum"
        )
        self.usage_events_failed = Counter(
            "gateway_usage_events_failed", "Usage events that could not be written to Redis", registry=r
        )
        self.beyond_hold_micro = Counter(
            "gateway_usage_beyond_hold_micro_usd",
            "Cost providers reported beyond the buyer's hold (micro-USD): paid to sellers, borne by the platform",
            registry=r,
        )

    def child(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, memoised: prometheus_client takes a lock and builds a tuple on
        every call, which showed in hot-path profiles. Label values here are bounded (routes,
        listed models, statuses, outcomes), so the memo is too."""
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def exposition(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
