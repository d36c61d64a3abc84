"""Finishing a `/v1` request, exactly once, after its answer is on the wire (or it failed).

Three steps, each its own function:
1. `observe`: the request's metrics and, if it failed or was slow, one log line;
2. `usage_event`: the request's record (`RequestRecord`) as the usage event settlement reads;
3. one Redis batch (`FinishingBatch`) carrying the usage event, the hold's settle (hold → unsettled
   charge, at most once), the listing's performance bucket, capacity releases and breaker outcomes,
   retried while Redis is unreachable for a request that cost something; then its replies are read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aichat_gateway.billing.meter import UsageEvent
from aichat_gateway.config.logging import get_logger
from aichat_gateway.proxy.outcome import Outcome
from aichat_gateway.proxy.record import RequestRecord
from aichat_gateway.proxy.services import ProxyServices
from aichat_gateway.redislua import Batch, Pending

log = get_logger(__name__)

# While Redis is unreachable (restarting: refused, reset, still LOADING its data) the finishing
# batch of a charged request is tried again for this long: a usage event not written is a request
# served and never billed, and its hold stays reserved until swept.
FINISH_RETRY_SECONDS = 15.0
_FINISH_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8)  # then 1 s apart


async def finish(svc: ProxyServices, record: RequestRecord) -> None:
    """Metrics and the usage event, exactly once per request that presented a valid key."""
    elapsed = time.perf_counter() - record.started
    observe(svc, record, elapsed)
    if record.principal is None:
        return
    svc.keys.note_used(record.principal.key_id)
    event = usage_event(svc, record, elapsed)
    if record.beyond_hold_micro:
        _note_beyond_hold(svc, record, event)
    if record.listing is not None and record.outcome is Outcome.OK and event.ttft_ms >= 0:
        svc.speed.observe(record.listing.listing_id, event.ttft_ms)
    batch = FinishingBatch(svc, record, event)
    # Only a charge is worth waiting for, and a request with one has had its answer sent already.
    results, tries = await batch.execute(FINISH_RETRY_SECONDS if event.cost_micro > 0 else 0.0)
    if isinstance(results[0], Exception):
        svc.metrics.usage_events_failed.inc()
        # The log line is the record of last resort: it carries the whole event.
        log.error("usage_event_not_recorded", error=repr(results[0]), tries=tries, usage_event=event.fields())
        return
    svc.recent.add(event.request_id, event.user_id, event.cost_micro, svc.clock())
    await batch.read(results, retried=tries > 1)


def observe(svc: ProxyServices, record: RequestRecord, elapsed: float) -> None:
    """The request's metrics; one log line if it failed on our or the provider's side, or was slow."""
    known_model = record.model if svc.listings.index.routes_for(record.model) else "other"
    metrics = svc.metrics
    metrics.child(metrics.requests, record.route, known_model, str(record.status)).inc()
    metrics.child(metrics.latency, record.route).observe(elapsed)
    if record.stream and record.ttft_seconds is not None:
        metrics.child(metrics.ttft, known_model).observe(record.ttft_seconds)
    _log_if_notable(record, elapsed, svc.settings.slow_request_seconds)


def _log_if_notable(record: RequestRecord, elapsed: float, slow_after: float) -> None:
    """Names the listing that served (or last failed) and how many attempts it took; the request id
    is bound to every line of the request."""
    if record.status < 500 and elapsed < slow_after:
        return
    fields = {
        "listing": record.listing.public_id if record.listing else None,
        "attempts": record.attempts,
        "model": record.model,
        "status": record.status,
        "outcome": record.outcome,
        "latency_ms": int(elapsed * 1000),
        "ttft_ms": int(record.ttft_seconds * 1000) if record.ttft_seconds is not None else None,
    }
    if record.status >= 500:
        log.warning("request_failed", **fields)
    else:
        log.warning("slow_request", **fields)


def usage_event(svc: ProxyServices, record: RequestRecord, elapsed: float) -> UsageEvent:
    assert record.principal is not None
    return UsageEvent(
        request_id=record.request_id,
        key_id=record.principal.key_id,
        user_id=record.principal.user_id,
        listing_id=record.listing.listing_id if record.listing else "",
        model=record.model,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        usage_source=record.usage_source,
        latency_ms=int(elapsed * 1000),
        ttft_ms=int(record.ttft_seconds * 1000) if record.ttft_seconds is not None else -1,
        outcome=record.outcome,
        status=record.status,
        attempts=record.attempts,
        stream=record.stream,
        ts_ms=int(svc.clock() * 1000),
        seller_id=record.listing.seller_id if record.listing else "",
        cost_micro=record.cost_micro,
        held_micro=record.held_micro or 0,
        beyond_hold_micro=record.beyond_hold_micro,
    )


def _note_beyond_hold(svc: ProxyServices, record: RequestRecord, event: UsageEvent) -> None:
    """The provider billed more than the hold: the seller is still paid in full (settlement books
    the rest against the platform's exposure account); counted and logged for the operator."""
    svc.metrics.beyond_hold_micro.inc(record.beyond_hold_micro)
    log.warning(
        "usage_beyond_hold",
        listing=record.listing.public_id if record.listing else None,
        model=record.model,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        held_micro=event.held_micro,
        beyond_hold_micro=record.beyond_hold_micro,
    )


def redis_unreachable(result: Any) -> bool:
    """Did the batch fail for want of Redis (worth trying again), rather than on a command?"""
    return isinstance(result, RedisConnectionError | RedisTimeoutError | OSError)


@dataclass
class FinishingBatch:
    """The request's last Redis round trip. Every command in it is safe to repeat: the hold settles
    at most once and settlement takes one usage row per request id."""

    svc: ProxyServices
    record: RequestRecord
    event: UsageEvent
    # What the last `queue` left to read back: the hold's settle, capacity releases, breaker updates.
    settled: Pending[int] | None = None
    releases: list[Pending[Any]] = field(default_factory=list)
    breaker_updates: list[tuple[str, Pending[Any]]] = field(default_factory=list)

    def queue(self, pipe: Batch) -> None:
        svc, record, event = self.svc, self.record, self.event
        svc.meter.record_in(pipe, event)  # first: `results[0]` says whether the event was written
        self.settled = None
        if record.held_micro is not None:
            # Redis runs one connection's pipelined commands back to back: no settlement worker
            # sees the event before this settle has recorded its charge.
            self.settled = svc.hot.settle_in(
                pipe,
                buyer_id=event.user_id,
                request_id=event.request_id,
                cost_micro=record.cost_micro,
                late_cap_micro=record.held_micro,
            )
        serving = record.listing.listing_id if record.listing is not None else ""
        if record.listing is not None:
            ok = record.outcome is Outcome.OK
            svc.stats.record_in(pipe, serving, svc.clock(), ok, event.latency_ms, event.ttft_ms)
        delivered = record.outcome in (Outcome.OK, Outcome.CLIENT_DISCONNECTED)
        used = record.prompt_tokens + record.completion_tokens
        self.releases = [
            svc.capacity.release_in(pipe, ticket, used if delivered and ticket.listing_id == serving else 0)
            for ticket in record.tickets
        ]
        view = svc.breaker_view
        self.breaker_updates = [
            (listing_id, svc.breakers.record_in(pipe, listing_id, healthy, probe))
            for listing_id, healthy, probe in record.health
            if not healthy or probe or view.success_worth_recording(listing_id)
        ]

    async def execute(self, retry_for: float, sleep: Callable[[float], Any] = asyncio.sleep) -> tuple[list[Any], int]:
        """Queue the commands on a fresh batch and run it, again while Redis is unreachable, for up
        to `retry_for` seconds; (replies, tries)."""
        give_up = time.monotonic() + retry_for
        tries = 0
        while True:
            batch = Batch(self.svc.redis)
            self.queue(batch)
            tries += 1
            try:
                results = await batch.execute()
            except (RedisError, OSError) as exc:
                results = [exc]
            pause = _FINISH_PAUSES[tries - 1] if tries <= len(_FINISH_PAUSES) else 1.0
            if not redis_unreachable(results[0]) or time.monotonic() + pause > give_up:
                return results, tries
            await sleep(pause)

    async def read(self, results: list[Any], *, retried: bool) -> None:
        """Check the hold's settle; apply breaker states; let capacity releases retry a script Redis
        forgot. Failures here are logged: the event is recorded, leases expire by themselves."""
        if self.settled is not None:
            await _settled(self.event, self.settled, results, retried=retried)
        for listing_id, pending in self.breaker_updates:
            try:
                self.svc.breaker_view.apply_state(listing_id, await pending.resolve(results))
            except (RedisError, OSError) as exc:
                log.warning("breaker_not_updated", listing_id=listing_id, error=repr(exc))
        for release in self.releases:
            try:
                await release.resolve(results)  # retries a script Redis forgot (NOSCRIPT) with EVAL
            except (RedisError, OSError) as exc:
                log.warning("capacity_not_released", error=repr(exc))  # the lease expires it anyway


async def _settled(event: UsageEvent, settled: Pending[int], results: list[Any], *, retried: bool) -> None:
    """Check the hold's settle. A hold swept before the request finished (it outlived its TTL) is
    charged anyway by the same script, as an unsettled charge (`late_cap_micro`), so nothing is
    left to do here but notice it."""
    try:
        charged = await settled.resolve(results)
        if charged < 0 and event.cost_micro > 0 and not retried:
            log.warning("hold_not_charged", cost_micro=event.cost_micro)
    except (RedisError, OSError) as exc:
        # The hold expires and is swept; the usage event (recorded) still charges the buyer.
        log.error("hold_not_settled", error=repr(exc), cost_micro=event.cost_micro)
