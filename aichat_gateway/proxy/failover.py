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
from aichat_gateway.marketplace.capacity import Admission, Ticket
from aichat_gateway.marketplace.resting import COOLING, EXHAUSTED, cooling_reason, exhausted_reason
from aichat_gateway.marketplace.snapshot import Route as ListingRoute
from aichat_gateway.proxy.adapters import Adapter, AdapterError, UpstreamRequest, adapter_for
from aichat_gateway.proxy.errors import (
    GatewayError,
    InvalidRequest,
    RateLimited,
    Unavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from aichat_gateway.proxy.record import RequestRecord
from aichat_gateway.proxy.relay import ClientWatch
from aichat_gateway.proxy.services import ProxyServices, services
from aichat_gateway.proxy.upstream import StatusKind, classify_status, is_timeout

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
    request: Request, record: RequestRecord, routes: list[ListingRoute], build: Build, stream: bool
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
                    opened = await open_routes(request, record, routes, build, stream)
            except TimeoutError:
                # The whole failover, every attempt together, ran out of time before a first byte.
                if record.listing is not None and all(h[0] != record.listing.listing_id for h in record.health):
                    record.health.append((record.listing.listing_id, False, None))
                raise UpstreamTimeout(
                    f"No provider answered within the gateway's {deadline:g} s deadline. Please retry."
                ) from None
    except BaseException:
        watch.close()
        raise
    if opened.chunks is None:
        watch.close()
    return opened, watch


@dataclass(slots=True)
class Tally:
    """Why the listings looked at so far did not answer; decides the buyer's error if none does."""

    tried: int = 0
    skipped_broken: int = 0  # breaker open, or a half-open breaker's probe taken by another request
    skipped_full: int = 0  # at a capacity cap, or resting after a provider's Retry-After
    full_retry: float | None = None  # seconds until the first of those has room again
    refusal: AdapterError | None = None  # the last provider kind that cannot express this request
    busy: int = 0  # 429/503 answers: providers up but without room
    busy_retry: float | None = None
    timed_out: bool = False

    def full_for(self, seconds: float | None) -> None:
        self.skipped_full += 1
        if seconds is not None:
            self.full_retry = seconds if self.full_retry is None else min(self.full_retry, seconds)

    def error(self) -> GatewayError:
        """Pure: the buyer's error when no listing answered. All at capacity -> 429 with
        Retry-After, all breakers open -> 503, timeouts -> 504, otherwise 502."""
        if self.tried == 0 and self.refusal is not None and not self.skipped_broken:
            return InvalidRequest(self.refusal.message, param=self.refusal.param)
        if self.tried == 0 and self.skipped_full:
            return RateLimited(
                "Every listing for this model is at its capacity limit right now. Please retry shortly.",
                headers=_retry_after(self.full_retry),
            )
        if self.tried == 0 and self.skipped_broken:
            return Unavailable("Every provider for this model is failing right now. Please retry shortly.")
        if self.busy and self.busy == self.tried:
            # Every provider tried said "busy": no room now, exactly like a seller's cap (429 above).
            return RateLimited(
                "Every provider for this model is at capacity right now. Please retry shortly.",
                headers=_retry_after(self.busy_retry),
            )
        if self.timed_out:
            return UpstreamTimeout("The upstream provider did not answer in time. Please retry.")
        return UpstreamFailed("No upstream provider could serve this request right now. Please retry.")


def _retry_after(seconds: float | None) -> dict[str, str] | None:
    return {"retry-after": str(max(1, math.ceil(seconds)))} if seconds is not None else None


@dataclass(frozen=True, slots=True)
class Admitted:
    """A listing's gates passed: the capacity taken on it (limited listings) and the breaker's probe
    token (a half-open breaker lets one request through)."""

    ticket: Ticket | None = None
    probe: str | None = None


_ADMITTED = Admitted()  # the usual case, shared: no limits, breaker closed


async def open_routes(
    request: Request, record: RequestRecord, routes: list[ListingRoute], build: Build, stream: bool
) -> Opened:
    """Try routes in order until one answers; failover happens only here, before any byte is relayed."""
    svc = services(request)
    tally = Tally()
    unroutable = svc.breaker_view.unroutable()  # breakers not closed: usually empty
    for route in routes:
        if tally.tried == svc.settings.upstream_attempts:
            break
        try:
            adapter = adapter_for(route.provider)
            outgoing = build(route, adapter)
        except AdapterError as exc:
            tally.refusal = exc  # e.g. n > 1 on an Anthropic listing: another kind may still serve it
            continue
        gate = unroutable.get(route.listing_id)
        if gate is Verdict.SKIP:  # breaker open
            tally.skipped_broken += 1
            continue
        admitted = await _admit(request, svc, record, route, gate, tally)
        if admitted is None:
            continue
        opened = await _attempt(request, svc, record, route, adapter, outgoing, admitted, stream, tally)
        if opened is not None:
            return opened
    raise tally.error()


async def _admit(
    request: Request, svc: ProxyServices, record: RequestRecord, route: ListingRoute, gate: Verdict | None, tally: Tally
) -> Admitted | None:
    """A listing's gates: not resting, room taken on a limited listing, the probe permit of a
    half-open breaker. None (and tallied) if it may not be tried now."""
    resting = svc.exhausted_until.get(route.listing_id)
    if resting is not None:
        now = svc.clock()
        if resting > now:  # at a cap, or told to wait (429 Retry-After)
            tally.full_for(resting - now)
            return None
    ticket = None
    if route.limits is not None:
        admission = await take_capacity(request, record, route)
        if not admission.admitted:
            tally.full_for(admission.retry_after)
            return None
        ticket = admission.ticket
    probe = None
    if gate is Verdict.PROBE:  # open long enough: one request may probe it
        permit = await svc.breakers.allow(route.listing_id)
        if not permit:
            if ticket is not None:
                await svc.capacity.cancel(ticket)
            tally.skipped_broken += 1
            return None
        probe = permit.probe
    if ticket is None and probe is None:
        return _ADMITTED
    if ticket is not None:
        record.tickets.append(ticket)
    return Admitted(ticket, probe)


async def _attempt(
    request: Request,
    svc: ProxyServices,
    record: RequestRecord,
    route: ListingRoute,
    adapter: Adapter,
    outgoing: UpstreamRequest,
    admitted: Admitted,
    stream: bool,
    tally: Tally,
) -> Opened | None:
    """Send the request to one listing and read the start of its answer. None (and tallied) when
    the next listing must be tried: connect errors, timeouts, 408/429/5xx, 401/403 (which also mark
    the listing invalid everywhere), a stream that ends before its first byte."""
    tally.tried += 1
    record.attempts += 1
    record.listing = route
    probe = admitted.probe
    sent = time.perf_counter()
    try:
        response = await svc.upstream.send(outgoing.method, outgoing.url, outgoing.body, outgoing.headers)
    except httpx.HTTPError as exc:
        tally.timed_out = tally.timed_out or is_timeout(exc)
        outcome = "timeout" if is_timeout(exc) else "connect_error"
        observe_upstream(request, outcome, sent, route, record, error=type(exc).__name__)
        record.health.append((route.listing_id, False, probe))
        return None
    verdict = classify_status(response.status_code, response.headers.get("retry-after"))
    observe_upstream(request, verdict.kind.value, sent, route, record, status=response.status_code)
    if response.status_code in (429, 503):
        await _note_busy(svc, route, verdict.retry_after, tally)
    if verdict.kind is StatusKind.KEY_REJECTED:
        await svc.listings.mark_invalid(
            route.listing_id, f"the provider rejected the listing's API key (HTTP {response.status_code})"
        )
    # "Busy" (429) is the provider working as it should: not a breaker failure.
    healthy = verdict.kind in (StatusKind.OK, StatusKind.CLIENT_ERROR) or response.status_code == 429
    try:
        if verdict.kind is StatusKind.OK and stream:
            # The transport's own byte stream: httpx's aiter_raw adds a generator layer per chunk.
            chunks = aiter(response.stream)  # type: ignore[arg-type]
            first = await anext(chunks, b"")
            # Time to first token is the buyer's wait: from the request's start (failover
            # included) to the provider's first bytes, which the relay forwards at once.
            record.ttft_seconds = time.perf_counter() - record.started
            if first:
                record.health.append((route.listing_id, True, probe))
                return Opened(route, adapter, response, first, chunks)
            healthy = False
        elif verdict.kind in (StatusKind.OK, StatusKind.CLIENT_ERROR):
            content = await read_bounded(response)
            record.health.append((route.listing_id, True, probe))
            return Opened(route, adapter, response, content, None)
    except httpx.HTTPError as exc:
        tally.timed_out = tally.timed_out or is_timeout(exc)
        healthy = False
        log.warning("upstream_read_failed", listing=route.public_id, error=type(exc).__name__)
    except BaseException:
        await response.aclose()  # cancelled (the buyer left) or a bug: never leak the connection
        raise
    record.health.append((route.listing_id, healthy, probe))
    await response.aclose()
    return None


async def _note_busy(svc: ProxyServices, route: ListingRoute, retry_after: float | None, tally: Tally) -> None:
    """A 429/503: the provider is up but has no room. With a Retry-After, this process leaves the
    listing alone until then, and its seller sees it cooling."""
    tally.busy += 1
    if retry_after is None:
        return
    tally.busy_retry = retry_after if tally.busy_retry is None else min(tally.busy_retry, retry_after)
    until = svc.clock() + retry_after
    svc.exhausted_until[route.listing_id] = until
    await svc.rests.begin(route.listing_id, COOLING, until, cooling_reason(retry_after, until))


async def take_capacity(request: Request, record: RequestRecord, route: ListingRoute) -> Admission:
    """Take room on a limited listing; a listing at a cap is remembered as resting until it resets."""
    svc = services(request)
    exhausted: dict[str, float] = svc.exhausted_until
    now = svc.clock()
    assert record.estimate is not None
    admission: Admission = await svc.capacity.take(route.listing_id, route.limits, record.estimate(), record.request_id)
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
    request: Request, outcome: str, sent: float, route: ListingRoute, record: RequestRecord, **fields: Any
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
            attempt=record.attempts,
            outcome=outcome,
            **fields,
        )
