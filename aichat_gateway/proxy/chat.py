"""The hot path: `/v1/chat/completions`, `/v1/embeddings` and `/v1/models`.

One request: authenticate the key (in-process cache), parse the body once, take the routes for
the model from the in-process listing snapshot, try them in router order until one answers
(failover only before the buyer has seen a byte), relay the answer, and record exactly one usage
event in a `finally`. Steady state: no Postgres query, one Redis round trip (the usage event).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from redis.exceptions import RedisError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.accounts.keys import KeyPrincipal
from aichat_gateway.billing.meter import UsageEvent
from aichat_gateway.config.logging import get_logger, mask
from aichat_gateway.marketplace.breaker import Verdict
from aichat_gateway.marketplace.capacity import Admission, Ticket
from aichat_gateway.marketplace.resting import COOLING, EXHAUSTED, cooling_reason, exhausted_reason
from aichat_gateway.marketplace.snapshot import Route as ListingRoute
from aichat_gateway.proxy import inbound, routing
from aichat_gateway.proxy.adapters import Adapter, AdapterError, UpstreamRequest, adapter_for
from aichat_gateway.proxy.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    RateLimited,
    Unavailable,
    UpstreamFailed,
    UpstreamTimeout,
)
from aichat_gateway.proxy.relay import ClientWatch, RelayStream, StreamResult
from aichat_gateway.proxy.upstream import Outcome, UpstreamClient, classify_status, is_timeout

log = get_logger(__name__)
_MAX_UPSTREAM_BODY = 32 * 1024 * 1024
DEFAULT_ANSWER_TOKENS = 4096  # a model outside the catalog, asked without max_tokens


@dataclass
class Attempt:
    """What one request learned on its way; becomes the usage event."""

    request_id: str
    started: float
    route: str
    principal: KeyPrincipal | None = None
    model: str = ""
    stream: bool = False
    listing: ListingRoute | None = None
    attempts: int = 0
    status: int = 500
    outcome: str = "error"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_source: str = "estimated"
    ttft_seconds: float | None = None
    handed_off: bool = False  # a response will finish this attempt after it is sent
    # (listing id, healthy, probe token) per listing tried: recorded on the breakers when finishing.
    health: list[tuple[str, bool, str | None]] = field(default_factory=list)
    # Capacity taken on limited listings; released (tokens corrected) when finishing.
    tickets: list[Ticket] = field(default_factory=list)
    # Worst-case tokens of this request (prompt + allowed answer), computed only if a listing has limits.
    estimate: Callable[[], int] | None = None


# Builds one provider request for a route with its kind's adapter; raises AdapterError if it cannot.
Build = Callable[[ListingRoute, Adapter], UpstreamRequest]


@dataclass(frozen=True, slots=True)
class Opened:
    route: ListingRoute
    adapter: Adapter
    response: httpx.Response
    first_chunk: bytes
    chunks: AsyncIterator[bytes] | None


async def chat_completions(request: Request) -> Response:
    state = request.app.state
    async with _accounted(request, "chat") as attempt:
        attempt.principal = await _authenticate(request)
        body = await inbound.read_json_body(request, state.settings.max_body_bytes)
        chat = inbound.parse_chat_request(body, state.settings)
        attempt.model, attempt.stream = chat.model, chat.stream
        attempt.estimate = functools.cache(lambda: _worst_case_tokens(request, body, chat.model, chat.max_tokens))
        routes = _routes_for(request, attempt, body, chat.max_tokens)

        def build(route: ListingRoute, adapter: Adapter) -> UpstreamRequest:
            key = route.api_key.reveal()
            return adapter.chat_request(body, route.upstream_model, chat.stream, route.base_url, key)

        opened, watch = await _open_watched(request, attempt, routes, build, chat.stream)
        if opened.chunks is None:
            answer = _finish_plain(request, attempt, opened, body, translate_as=chat.model)
            return _after_response(answer, request, attempt)

        async def on_done(result: StreamResult) -> None:
            state.metrics.inflight_streams.dec()
            _account_stream(request, attempt, result, body)
            await _finish(request, attempt)

        attempt.handed_off = True
        state.metrics.inflight_streams.inc()
        return RelayStream(
            opened.response,
            opened.first_chunk,
            opened.chunks,
            opened.adapter.stream_translator(chat.model, chat.client_wants_usage),
            watch,
            on_done,
            _gateway_headers(attempt, opened.route),
        )


async def embeddings(request: Request) -> Response:
    state = request.app.state
    async with _accounted(request, "embeddings") as attempt:
        attempt.principal = await _authenticate(request)
        body = await inbound.read_json_body(request, state.settings.max_body_bytes)
        attempt.model = inbound.parse_embeddings_request(body)
        attempt.estimate = functools.cache(lambda: int(state.tokens.count_prompt(body)))
        routes = _routes_for(request, attempt, body, 1)

        def build(route: ListingRoute, adapter: Adapter) -> UpstreamRequest:
            return adapter.embeddings_request(body, route.upstream_model, route.base_url, route.api_key.reveal())

        opened, _ = await _open_watched(request, attempt, routes, build, False)
        return _after_response(_finish_plain(request, attempt, opened, body), request, attempt)


@contextlib.asynccontextmanager
async def _accounted(request: Request, route: str) -> AsyncIterator[Attempt]:
    """One Attempt per request; it is finished (metrics, usage event) exactly once: here, unless a
    response took that job over (`handed_off`) to do it after the answer is sent."""
    attempt = Attempt(request.state.request_id, time.perf_counter(), route)
    try:
        yield attempt
    except GatewayError as exc:
        attempt.status, attempt.outcome = exc.status, exc.code or "error"
        if attempt.attempts:  # how many providers were tried before giving up
            exc.headers = {**(exc.headers or {}), "x-gateway-attempts": str(attempt.attempts)}
        raise
    finally:
        if not attempt.handed_off:
            await _finish(request, attempt)


async def list_models(request: Request) -> Response:
    await _authenticate(request)
    catalog = request.app.state.catalog
    data = []
    for model in request.app.state.listings.index.models():
        listed = catalog.get(model)
        data.append(
            {
                "id": model,
                "object": "model",
                "created": 0,
                "owned_by": listed.provider if listed else "marketplace",
            }
        )
    return JSONResponse({"object": "list", "data": data})


async def _authenticate(request: Request) -> KeyPrincipal:
    secret = inbound.bearer_key(request)
    principal: KeyPrincipal | None = await request.app.state.keys.lookup(secret)
    if principal is None:
        raise AuthenticationFailed("Incorrect API key provided, or the key was revoked.")
    return principal


def _worst_case_tokens(request: Request, body: dict[str, Any], model: str, max_tokens: int | None) -> int:
    """Prompt plus the longest answer allowed: what capacity (and later the hold) must assume."""
    state = request.app.state
    if max_tokens is None:
        listed = state.catalog.get(model)
        max_tokens = listed.max_output_tokens if listed else DEFAULT_ANSWER_TOKENS
    return int(state.tokens.count_prompt(body)) + max_tokens


def _routes_for(request: Request, attempt: Attempt, body: dict[str, Any], max_tokens: int | None) -> list[ListingRoute]:
    return routing.routes_for(
        request.app.state,
        attempt.model,
        attempt.request_id,
        body_size=request.state.body_size,
        max_tokens=max_tokens,
        preferences=routing.request_preferences(body),
    )


async def _open_watched(
    request: Request, attempt: Attempt, routes: list[ListingRoute], build: Build, stream: bool
) -> tuple[Opened, ClientWatch]:
    """`_open`, abandoned at once (and the provider request closed) if the buyer goes away.

    For a stream the watch stays running and is handed to the relay; otherwise it is closed here.
    """
    watch = ClientWatch(request.receive)
    try:
        with watch.guard():
            opened = await _open(request, attempt, routes, build, stream)
    except BaseException:
        watch.close()
        raise
    if opened.chunks is None:
        watch.close()
    return opened, watch


async def _open(request: Request, attempt: Attempt, routes: list[ListingRoute], build: Build, stream: bool) -> Opened:
    """Try routes in order until one answers; failover happens only here, before any byte is relayed."""
    state = request.app.state
    client: UpstreamClient = state.upstream
    timed_out = False
    refusal: AdapterError | None = None  # the last provider kind that cannot express this request
    busy_statuses: list[int] = []  # 429/503 answers: the providers are up but have no room
    retry_after: float | None = None
    unroutable = state.breaker_view.unroutable()  # breakers not closed: usually empty
    tried = skipped_broken = skipped_full = 0
    full_retry: float | None = None
    for route in routes:
        if tried == state.settings.upstream_attempts:
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
        resting = state.exhausted_until.get(route.listing_id)
        now = state.clock()
        if resting is not None and resting > now:  # at a cap, or told to wait (429 Retry-After)
            skipped_full += 1
            full_retry = min(full_retry or resting - now, resting - now)
            continue
        ticket = None
        if route.limits is not None:
            admission = await _take_capacity(request, attempt, route)
            if not admission.admitted:
                skipped_full += 1
                if admission.retry_after is not None:
                    full_retry = min(full_retry or admission.retry_after, admission.retry_after)
                continue
            ticket = admission.ticket
        probe = None
        if gate is Verdict.PROBE:  # open long enough: one request may probe it
            permit = await state.breakers.allow(route.listing_id)
            if not permit:
                if ticket is not None:
                    await state.capacity.cancel(ticket)
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
            _observe_upstream(request, outcome, sent, route, attempt, error=type(exc).__name__)
            attempt.health.append((route.listing_id, False, probe))
            continue
        verdict = classify_status(response.status_code, response.headers.get("retry-after"))
        _observe_upstream(request, verdict.outcome.value, sent, route, attempt, status=response.status_code)
        if response.status_code in (429, 503):
            busy_statuses.append(response.status_code)
            if verdict.retry_after is not None:
                retry_after = min(retry_after or verdict.retry_after, verdict.retry_after)
                # The provider said when to come back: this process leaves the listing alone until then.
                until = state.clock() + verdict.retry_after
                state.exhausted_until[route.listing_id] = until
                await state.rests.begin(route.listing_id, COOLING, until, cooling_reason(verdict.retry_after, until))
        if verdict.outcome is Outcome.KEY_REJECTED:
            await state.listings.mark_invalid(
                route.listing_id, f"the provider rejected the listing's API key (HTTP {response.status_code})"
            )
        # "Busy" (429) is the provider working as it should: not a breaker failure.
        healthy = verdict.outcome in (Outcome.OK, Outcome.CLIENT_ERROR) or response.status_code == 429
        try:
            if verdict.outcome is Outcome.OK and stream:
                # The transport's own byte stream: httpx's aiter_raw adds a generator layer per chunk.
                chunks = aiter(response.stream)  # type: ignore[arg-type]
                first = await anext(chunks, b"")
                if first:
                    attempt.health.append((route.listing_id, True, probe))
                    return Opened(route, adapter, response, first, chunks)
                healthy = False
            elif verdict.outcome in (Outcome.OK, Outcome.CLIENT_ERROR):
                content = await _read_bounded(response)
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


async def _take_capacity(request: Request, attempt: Attempt, route: ListingRoute) -> Admission:
    """Take room on a limited listing; a listing at a cap is remembered as resting until it resets."""
    state = request.app.state
    exhausted: dict[str, float] = state.exhausted_until
    now = state.clock()
    assert attempt.estimate is not None
    admission: Admission = await state.capacity.take(
        route.listing_id, route.limits, attempt.estimate(), attempt.request_id
    )
    if admission.exhausts_listing and admission.retry_after is not None:
        until = now + admission.retry_after
        exhausted[route.listing_id] = until
        await state.rests.begin(route.listing_id, EXHAUSTED, until, exhausted_reason(admission.limit or "a", until))
    return admission


async def _read_bounded(response: httpx.Response) -> bytes:
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


def _after_response(response: Response, request: Request, attempt: Attempt) -> Response:
    """Record the request once the answer is on the wire: the buyer does not wait for Redis."""
    attempt.handed_off = True
    response.background = BackgroundTask(_finish, request, attempt)
    return response


def _finish_plain(
    request: Request, attempt: Attempt, opened: Opened, body: dict[str, Any], translate_as: str | None = None
) -> Response:
    """A complete answer. Chat answers go through the route's adapter (`translate_as` is the model
    name the buyer asked for; OpenAI listings pass bytes through untouched); embeddings pass through."""
    status = opened.response.status_code
    raw = opened.first_chunk
    try:
        content = opened.adapter.chat_response(status, raw, translate_as) if translate_as is not None else raw
    except AdapterError:
        attempt.outcome = "upstream_error"
        raise UpstreamFailed("The upstream provider sent an unreadable answer.") from None
    attempt.ttft_seconds = time.perf_counter() - attempt.started
    attempt.status = status
    headers = _gateway_headers(attempt, opened.route)
    if status >= 400:
        attempt.outcome = "client_error"
        error_body = mask(content.decode("utf-8", "replace")).encode()
        return Response(error_body, status_code=status, media_type="application/json", headers=headers)
    usage = opened.adapter.usage_of_response(raw)  # usually the only JSON parse of the answer
    if usage is not None:
        attempt.prompt_tokens, attempt.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        attempt.usage_source = "upstream"
    else:
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            attempt.outcome = "upstream_error"
            raise UpstreamFailed("The upstream provider sent an unreadable answer.") from None
        counter = request.app.state.tokens
        attempt.prompt_tokens = counter.count_prompt(body)
        attempt.completion_tokens = counter.count_text(_answer_text(answer))
    attempt.outcome = "ok"
    return Response(content, status_code=status, media_type="application/json", headers=headers)


def _answer_text(answer: Any) -> str:
    parts: list[str] = []
    for choice in answer.get("choices") or [] if isinstance(answer, dict) else []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            if isinstance(message.get("content"), str):
                parts.append(message["content"])
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict) and isinstance(call.get("function"), dict):
                    parts.append(str(call["function"].get("arguments", "")))
    return "".join(parts)


def _account_stream(request: Request, attempt: Attempt, result: StreamResult, body: dict[str, Any]) -> None:
    meter = result.meter
    attempt.status = 200
    attempt.outcome = result.outcome
    attempt.ttft_seconds = result.ttft_seconds
    # A cut stream is charged for what was delivered: the provider's usage only covers a full answer.
    if meter.usage is not None and result.outcome == "ok":
        attempt.prompt_tokens = meter.usage.prompt_tokens
        attempt.completion_tokens = meter.usage.completion_tokens
        attempt.usage_source = "upstream"
    else:
        counter = request.app.state.tokens
        attempt.prompt_tokens = meter.usage.prompt_tokens if meter.usage else counter.count_prompt(body)
        attempt.completion_tokens = counter.count_text("".join(meter.text_parts))


def _listing_id(attempt: Attempt) -> str:
    return attempt.listing.listing_id if attempt.listing is not None else ""


def _gateway_headers(attempt: Attempt, route: ListingRoute) -> dict[str, str]:
    return {"x-gateway-listing": route.public_id, "x-gateway-attempts": str(attempt.attempts)}


def _observe_upstream(
    request: Request, outcome: str, sent: float, route: ListingRoute, attempt: Attempt, **fields: Any
) -> None:
    metrics = request.app.state.metrics
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


async def _finish(request: Request, attempt: Attempt) -> None:
    """Metrics and the usage event, exactly once per request that presented a valid key."""
    state = request.app.state
    elapsed = time.perf_counter() - attempt.started
    known_model = attempt.model if state.listings.index.routes_for(attempt.model) else "other"
    metrics = state.metrics
    metrics.child(metrics.requests, attempt.route, known_model, str(attempt.status)).inc()
    metrics.child(metrics.latency, attempt.route).observe(elapsed)
    if attempt.stream and attempt.ttft_seconds is not None:
        metrics.child(metrics.ttft, known_model).observe(attempt.ttft_seconds)
    if attempt.principal is None:
        return
    state.keys.note_used(attempt.principal.key_id)
    event = UsageEvent(
        request_id=attempt.request_id,
        key_id=attempt.principal.key_id,
        user_id=attempt.principal.user_id,
        listing_id=attempt.listing.listing_id if attempt.listing else "",
        model=attempt.model,
        prompt_tokens=attempt.prompt_tokens,
        completion_tokens=attempt.completion_tokens,
        usage_source=attempt.usage_source,
        latency_ms=int(elapsed * 1000),
        ttft_ms=int(attempt.ttft_seconds * 1000) if attempt.ttft_seconds is not None else -1,
        outcome=attempt.outcome,
        status=attempt.status,
        attempts=attempt.attempts,
        stream=attempt.stream,
        ts_ms=int(state.clock() * 1000),
    )
    pipe = state.redis.pipeline(transaction=False)
    state.meter.record_in(pipe, event)
    if attempt.listing is not None:
        if attempt.outcome == "ok" and event.ttft_ms >= 0:
            state.speed.observe(attempt.listing.listing_id, event.ttft_ms)
        state.stats.record_in(
            pipe, attempt.listing.listing_id, state.clock(), attempt.outcome == "ok", event.latency_ms, event.ttft_ms
        )
    releases = []
    for ticket in attempt.tickets:
        served = attempt.outcome in ("ok", "client_disconnected") and ticket.listing_id == _listing_id(attempt)
        used = attempt.prompt_tokens + attempt.completion_tokens if served else 0
        releases.append(state.capacity.release_in(pipe, ticket, used))
    view = state.breaker_view
    breaker_updates = [
        (listing_id, state.breakers.record_in(pipe, listing_id, healthy, probe))
        for listing_id, healthy, probe in attempt.health
        if not healthy or probe or view.success_worth_recording(listing_id)
    ]
    try:
        results = await pipe.execute(raise_on_error=False)
    except (RedisError, OSError) as exc:
        results = [exc]
    if isinstance(results[0], Exception):
        state.metrics.usage_events_failed.inc()
        # The log line is the record of last resort: it carries the whole event.
        log.error("usage_event_not_recorded", error=repr(results[0]), usage_event=event.fields())
        return
    for listing_id, pending in breaker_updates:
        try:
            state.breaker_view.apply_state(listing_id, await pending.resolve(results))
        except (RedisError, OSError) as exc:
            log.warning("breaker_not_updated", listing_id=listing_id, error=repr(exc))
    for release in releases:
        try:
            await release.resolve(results)  # retries a script Redis forgot (NOSCRIPT) with EVAL
        except (RedisError, OSError) as exc:
            log.warning("capacity_not_released", error=repr(exc))  # the lease expires it anyway


def hot_paths() -> dict[str, tuple[str, Callable[[Request], Awaitable[Response]]]]:
    """The `/v1` paths, answered by `hotpath.GatewayApp` without Starlette's middleware stack."""
    return {
        "/v1/chat/completions": ("POST", chat_completions),
        "/v1/embeddings": ("POST", embeddings),
        "/v1/models": ("GET", list_models),
    }
