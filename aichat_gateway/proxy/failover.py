"""Failover: try the routed listings in order until one answers, before any byte reaches the buyer.

Each candidate passes its gates first (the provider kind can express the request, breaker closed
or a half-open probe granted, not resting, capacity taken on a limited listing); then the request
is sent. Connect errors, timeouts, 408/429/5xx and 401/403 move on to the next listing; any other
answer is the buyer's. For a stream the first chunk is read inside the attempt, so a provider that
dies before its first byte still fails over. Why each listing was skipped decides the buyer's
error when none answers: all at capacity → 429 with Retry-After, all breakers open → 503,
timeouts → 504, otherwise 502.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from starlette.requests import Request

from aichat_gateway.config.logging import get_logger
from aichat_gateway.marketplace.breaker import Verdict
from aichat_gateway.marketplace.capacity import Admission
from aichat_gateway.marketplace.resting import COOLING, EXHAUSTED, cooling_reason, exhausted_reason
from aichat_gateway.marketplace.snapshot import Route as ListingRoute
from aichat_gateway.proxy.adapters import Adapter, AdapterError, UpstreamRequest, adapter_for
from aichat_gateway.proxy.attempt import Attempt
from aichat_gateway.proxy.errors import (
    InvalidRequest,
    RateLimited,
    Unavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from aichat_gateway.proxy.relay import ClientWatch
from aichat_gateway.proxy.services import services
from aichat_gateway.proxy.upstream import Outcome, Upstream, classify_status, is_timeout

log = get_logger(__name__)
_MAX_UPSTREAM_BODY = 32 * 1024 * 1024


# Builds one provider request for a route with its kind's adapter; raises AdapterError if it cannot.
Build = Callable[[ListingRoute, Adapter], UpstreamRequest]


@dataclass(frozen=True, slots=True)
class Opened:
    route: ListingRoute
    adapter: Adapter
    response: httpx.Response
    first_chunk: bytes
    chunks: AsyncIterator[bytes] | None


async def open_watched(
    request: Request, attempt: Attempt, routes: list[ListingRoute], build: Build, stream: bool
) -> tuple[Opened, ClientWatch]:
    """`open_routes`, abandoned at once (and the provider request closed) if the buyer goes away,
    or when all attempts together exceed `GATEWAY_UPSTREAM_DEADLINE` (504).

    For a stream the watch stays running and is handed to the relay; otherwise it is closed here.
    """
    watch = ClientWatch(request.receive)
    deadline = services(request).settings.upstream_deadline_seconds
    try:
        with watch.guard():
            try:
                async with asyncio.timeout(deadline):
                    opened = await open_routes(request, attempt, routes, build, stream)
            except TimeoutError:
                # The whole failover, every attempt together, ran out of time before a first byte.
                if attempt.listing is not None and all(h[0] != attempt.listing.listing_id for h in attempt.health):
                    attempt.health.append((attempt.listing.listing_id, False, None))
                attempt.outcome = "timeout"
                raise UpstreamTimeout(
                    f"No provider answered within the gateway's {deadline:g} s deadline. Please retry."
                ) from None
    except BaseException:
        watch.close()
        raise
    if opened.chunks is None:
        watch.close()
    return opened, watch


async def open_routes(
    request: Request, attempt: Attempt, routes: list[ListingRoute], build: Build, stream: bool
) -> Opened:
    """Try routes in order until one answers; failover happens only here, before any byte is relayed."""
    svc = services(request)
    client: Upstream = svc.upstream
    timed_out = False
    refusal: AdapterError | None = None  # the last provider kind that cannot express this request
    busy_statuses: list[int] = []  # 429/503 answers: the providers are up but have no room
    retry_after: float | None = None
    unroutable = svc.breaker_view.unroutable()  # breakers not closed: usually empty
    tried = skipped_broken = skipped_full = 0
    full_retry: float | None = None
    for route in routes:
        if tried == svc.settings.upstream_attempts:
            break
        try:
            adapter = adapter_for(route.provider)
            outgoing = build(route, adapter)
        except AdapterError as exc:
            refusal = exc  # e.g. n > 1 on an Anthropic listing: another kind may still serve it
            continue
        gate = unroutable.get(route.listing_id)
        if gate is Verdict.SKIP:  # breaker open
            skipped_broken += 1
            continue
        resting = svc.exhausted_until.get(route.listing_id)
        now = svc.clock()
        if resting is not None and resting > now:  # at a cap, or told to wait (429 Retry-After)
            skipped_full += 1
            full_retry = min(full_retry or resting - now, resting - now)
            continue
        ticket = None
        if route.limits is not None:
            admission = await take_capacity(request, attempt, route)
            if not admission.admitted:
                skipped_full += 1
                if admission.retry_after is not None:
                    full_retry = min(full_retry or admission.retry_after, admission.retry_after)
                continue
            ticket = admission.ticket
        probe = None
        if gate is Verdict.PROBE:  # open long enough: one request may probe it
            permit = await svc.breakers.allow(route.listing_id)
            if not permit:
                if ticket is not None:
                    await svc.capacity.cancel(ticket)
                skipped_broken += 1
                continue
            probe = permit.probe
        if ticket is not None:
            attempt.tickets.append(ticket)
        tried += 1
        attempt.attempts += 1
        sent = time.perf_counter()
        attempt.listing = route
        try:
            response = await client.send(outgoing.method, outgoing.url, outgoing.body, outgoing.headers)
        except httpx.HTTPError as exc:
            timed_out = timed_out or is_timeout(exc)
            outcome = "timeout" if is_timeout(exc) else "connect_error"
            observe_upstream(request, outcome, sent, route, attempt, error=type(exc).__name__)
            attempt.health.append((route.listing_id, False, probe))
            continue
        verdict = classify_status(response.status_code, response.headers.get("retry-after"))
        observe_upstream(request, verdict.outcome.value, sent, route, attempt, status=response.status_code)
        if response.status_code in (429, 503):
            busy_statuses.append(response.status_code)
            if verdict.retry_after is not None:
                retry_after = min(retry_after or verdict.retry_after, verdict.retry_after)
                # The provider said when to come back: this process leaves the listing alone until then.
                until = svc.clock() + verdict.retry_after
                svc.exhausted_until[route.listing_id] = until
                await svc.rests.begin(route.listing_id, COOLING, until, cooling_reason(verdict.retry_after, until))
        if verdict.outcome is Outcome.KEY_REJECTED:
            await svc.listings.mark_invalid(
                route.listing_id, f"the provider rejected the listing's API key (HTTP {response.status_code})"
            )
        # "Busy" (429) is the provider working as it should: not a breaker failure.
        healthy = verdict.outcome in (Outcome.OK, Outcome.CLIENT_ERROR) or response.status_code == 429
        try:
            if verdict.outcome is Outcome.OK and stream:
                # The transport's own byte stream: httpx's aiter_raw adds a generator layer per chunk.
                chunks = aiter(response.stream)  # type: ignore[arg-type]
                first = await anext(chunks, b"")
                # Time to first token is the buyer's wait: from the request's start (failover
                # included) to the provider's first bytes, which the relay forwards at once.
                attempt.ttft_seconds = time.perf_counter() - attempt.started
                if first:
                    attempt.health.append((route.listing_id, True, probe))
                    return Opened(route, adapter, response, first, chunks)
                healthy = False
            elif verdict.outcome in (Outcome.OK, Outcome.CLIENT_ERROR):
                content = await read_bounded(response)
                attempt.health.append((route.listing_id, True, probe))
                return Opened(route, adapter, response, content, None)
        except httpx.HTTPError as exc:
            timed_out = timed_out or is_timeout(exc)
            healthy = False
            log.warning("upstream_read_failed", listing=route.public_id, error=type(exc).__name__)
        except BaseException:
            await response.aclose()  # cancelled (the buyer left) or a bug: never leak the connection
            raise
        attempt.health.append((route.listing_id, healthy, probe))
        await response.aclose()
    if tried == 0 and refusal is not None and not skipped_broken:
        attempt.outcome = "invalid_request"
        raise InvalidRequest(refusal.message, param=refusal.param)
    if tried == 0 and skipped_full:
        attempt.outcome = "rate_limited"
        raise RateLimited(
            "Every listing for this model is at its capacity limit right now. Please retry shortly.",
            headers={"retry-after": str(max(1, math.ceil(full_retry)))} if full_retry is not None else None,
        )
    if tried == 0 and skipped_broken:
        attempt.outcome = "upstream_error"
        raise Unavailable("Every provider for this model is failing right now. Please retry shortly.")
    attempt.outcome = "upstream_error"
    if busy_statuses and len(busy_statuses) == attempt.attempts:
        # Every provider tried said "busy": no room now, exactly like a seller's cap (429 below).
        attempt.outcome = "rate_limited"
        raise RateLimited(
            "Every provider for this model is at capacity right now. Please retry shortly.",
            headers={"retry-after": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None,
        )
    if timed_out:
        raise UpstreamTimeout("The upstream provider did not answer in time. Please retry.")
    raise UpstreamFailed("No upstream provider could serve this request right now. Please retry.")


async def take_capacity(request: Request, attempt: Attempt, route: ListingRoute) -> Admission:
    """Take room on a limited listing; a listing at a cap is remembered as resting until it resets."""
    svc = services(request)
    exhausted: dict[str, float] = svc.exhausted_until
    now = svc.clock()
    assert attempt.estimate is not None
    admission: Admission = await svc.capacity.take(
        route.listing_id, route.limits, attempt.estimate(), attempt.request_id
    )
    if admission.exhausts_listing and admission.retry_after is not None:
        until = now + admission.retry_after
        exhausted[route.listing_id] = until
        await svc.rests.begin(route.listing_id, EXHAUSTED, until, exhausted_reason(admission.limit or "a", until))
    return admission


async def read_bounded(response: httpx.Response) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        async for part in response.aiter_raw():
            size += len(part)
            if size > _MAX_UPSTREAM_BODY:
                raise httpx.DecodingError("upstream answer too large")
            parts.append(part)
    finally:
        await response.aclose()
    return b"".join(parts)


def observe_upstream(
    request: Request, outcome: str, sent: float, route: ListingRoute, attempt: Attempt, **fields: Any
) -> None:
    metrics = services(request).metrics
    elapsed = time.perf_counter() - sent
    metrics.child(metrics.upstream_latency, outcome).observe(elapsed)
    metrics.child(metrics.listing_attempts, route.public_id, outcome).inc()
    metrics.child(metrics.listing_latency, route.public_id).observe(elapsed)
    if outcome != "ok":
        log.warning(
            "upstream_attempt_failed",
            listing=route.public_id,
            attempt=attempt.attempts,
            outcome=outcome,
            **fields,
        )
