"""The hot path: `/v1/chat/completions`, `/v1/embeddings` and `/v1/models`.

One request: authenticate the key (in-process cache), parse the body once, take the routes for
the model from the in-process listing snapshot, try them in router order until one answers
(failover only before the buyer has seen a byte), relay the answer, and record exactly one usage
event in a `finally`. Steady state: no Postgres query, one Redis round trip (the usage event).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.accounts.errors import StoreUnavailable
from aichat_gateway.accounts.keys import KeyPrincipal
from aichat_gateway.billing.meter import UsageEvent
from aichat_gateway.config.logging import get_logger, mask, remember_secret
from aichat_gateway.config.money import usd
from aichat_gateway.marketplace.snapshot import Route as ListingRoute
from aichat_gateway.proxy import charging, failover, inbound, routing
from aichat_gateway.proxy.adapters import Adapter, AdapterError, UpstreamRequest
from aichat_gateway.proxy.attempt import Attempt
from aichat_gateway.proxy.edge import charge_id
from aichat_gateway.proxy.errors import (
    AuthenticationFailed,
    GatewayError,
    Unavailable,
    UpstreamFailed,
)
from aichat_gateway.proxy.failover import Opened
from aichat_gateway.proxy.receipts import add_cost
from aichat_gateway.proxy.relay import RelayStream, StreamResult
from aichat_gateway.proxy.services import ProxyServices, services
from aichat_gateway.redislua import Batch, Pending

log = get_logger(__name__)
# What `_finish` queues on its pipeline: the hold's settle, capacity releases, breaker updates.
_Queued = tuple[Pending[int] | None, list[Pending[Any]], list[tuple[str, Pending[Any]]]]
_MAX_UPSTREAM_BODY = 32 * 1024 * 1024
DEFAULT_ANSWER_TOKENS = 4096  # a model outside the catalog, asked without max_tokens


async def chat_completions(request: Request) -> Response:
    svc = services(request)
    async with _accounted(request, "chat") as attempt:
        attempt.principal = await _authenticate(request)
        body = await inbound.read_json_body(request, svc.settings.max_body_bytes)
        chat = inbound.parse_chat_request(body, svc.settings)
        attempt.model, attempt.stream = chat.model, chat.stream
        attempt.estimate = functools.cache(lambda: _worst_case_tokens(request, body, chat.model, chat.max_tokens))
        routes = _routes_for(request, attempt, body, chat.max_tokens)
        answer_bound = (chat.max_tokens or _output_limit(request, chat.model)) * chat.choices
        prompt_bound = charging.prompt_tokens_bound(
            body["messages"], request.scope["state"]["body_size"], svc.catalog.part_allowance(chat.model)
        )
        await _hold(request, attempt, routes, prompt_bound, answer_bound)

        def build(route: ListingRoute, adapter: Adapter) -> UpstreamRequest:
            key = route.api_key.reveal()
            remember_secret(key)  # masked in this request's log lines, whatever its format
            return adapter.chat_request(body, route.upstream_model, chat.stream, route.base_url, key)

        opened, watch = await failover.open_watched(request, attempt, routes, build, chat.stream)
        if opened.chunks is None:
            answer = _finish_plain(request, attempt, opened, body, translate_as=chat.model)
            return _after_response(answer, request, attempt)

        async def on_done(result: StreamResult) -> None:
            svc.metrics.inflight_streams.dec()
            _account_stream(request, attempt, result, body)
            await _finish(request, attempt)

        attempt.handed_off = True
        svc.metrics.inflight_streams.inc()
        return RelayStream(
            opened.response,
            opened.first_chunk,
            opened.chunks,
            opened.adapter.stream_translator(chat.model, chat.client_wants_usage, _receipt(attempt, opened.route)),
            watch,
            on_done,
            _gateway_headers(attempt, opened.route),
            renew=functools.partial(_renew_leases, request, attempt),
            renew_every=min(svc.settings.hold_ttl_seconds, svc.capacity.lease_seconds) / 3,
            stall_after=svc.settings.upstream_read_timeout,
            drain=svc.usage_drain,
            secret=opened.route.api_key.reveal(),
        )


async def embeddings(request: Request) -> Response:
    svc = services(request)
    async with _accounted(request, "embeddings") as attempt:
        attempt.principal = await _authenticate(request)
        body = await inbound.read_json_body(request, svc.settings.max_body_bytes)
        attempt.model = inbound.parse_embeddings_request(body)
        attempt.estimate = functools.cache(lambda: int(svc.tokens.count_prompt(body)))
        routes = _routes_for(request, attempt, body, 1)
        await _hold(request, attempt, routes, request.scope["state"]["body_size"], 0)

        def build(route: ListingRoute, adapter: Adapter) -> UpstreamRequest:
            key = route.api_key.reveal()
            remember_secret(key)
            return adapter.embeddings_request(body, route.upstream_model, route.base_url, key)

        opened, _ = await failover.open_watched(request, attempt, routes, build, False)
        return _after_response(_finish_plain(request, attempt, opened, body), request, attempt)


@contextlib.asynccontextmanager
async def _accounted(request: Request, route: str) -> AsyncIterator[Attempt]:
    """One Attempt per request; it is finished (metrics, usage event) exactly once: here, unless a
    response took that job over (`handed_off`) to do it after the answer is sent."""
    state = request.scope["state"]  # begin_request's dict (request.state would wrap it)
    attempt = Attempt(charge_id(state["request_id"], state["request_id_given"]), time.perf_counter(), route)
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
    catalog = services(request).catalog
    data = []
    for model in services(request).listings.index.models():
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
    try:
        principal: KeyPrincipal | None = await services(request).keys.lookup(secret)
    except StoreUnavailable as exc:
        raise Unavailable(exc.message) from None
    if principal is None:
        raise AuthenticationFailed("Incorrect API key provided, or the key was revoked.")
    return principal


def _worst_case_tokens(request: Request, body: dict[str, Any], model: str, max_tokens: int | None) -> int:
    """Prompt plus the longest answer allowed: what capacity must assume."""
    return int(services(request).tokens.count_prompt(body)) + (max_tokens or _output_limit(request, model))


def _output_limit(request: Request, model: str) -> int:
    listed = services(request).catalog.get(model)
    return listed.max_output_tokens if listed else DEFAULT_ANSWER_TOKENS


async def _hold(
    request: Request, attempt: Attempt, routes: list[ListingRoute], prompt_bound: int, answer_bound: int
) -> None:
    assert attempt.principal is not None
    amount = charging.hold_amount(routes, prompt_bound, answer_bound)
    await charging.take_hold(services(request), attempt.principal, attempt.request_id, amount)
    attempt.held_micro = amount


def _receipt(attempt: Attempt, route: ListingRoute) -> Callable[[int, int], str]:
    """The cost of an answer of (prompt, completion) tokens on this route, as `usage.cost` shows it."""

    def cost_usd(prompt_tokens: int, completion_tokens: int) -> str:
        return usd(charging.charge(route.price, prompt_tokens, completion_tokens, attempt.held_micro or 0))

    return cost_usd


def _routes_for(request: Request, attempt: Attempt, body: dict[str, Any], max_tokens: int | None) -> list[ListingRoute]:
    svc = services(request)
    principal = attempt.principal
    assert principal is not None
    return routing.routes_for(
        svc,
        attempt.model,
        attempt.request_id,
        body_size=request.scope["state"]["body_size"],
        max_tokens=max_tokens,
        preferences=routing.request_preferences(body),
        buyer_id=principal.user_id,
        key_defaults=svc.key_defaults.of(principal.key_id, principal.routing),
    )


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
        # A provider may quote the key it was sent, in a format no pattern knows: mask it exactly too.
        error_body = mask(content.decode("utf-8", "replace"), (opened.route.api_key.reveal(),)).encode()
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
        counter = services(request).tokens
        attempt.prompt_tokens = counter.count_prompt(body)
        attempt.completion_tokens = counter.count_text(_answer_text(answer))
    attempt.outcome = "ok"
    attempt.cost_micro = _cost(attempt, opened.route)
    cost = usd(attempt.cost_micro)
    headers["x-gateway-cost-usd"] = cost
    return Response(add_cost(content, cost), status_code=status, media_type="application/json", headers=headers)


def _cost(attempt: Attempt, route: ListingRoute) -> int:
    """What the buyer pays for what was delivered (a cut stream: its delivered part); what it cost
    beyond the hold is noted on the attempt for settlement to pay the seller from the platform."""
    held, prompt, completion = attempt.held_micro or 0, attempt.prompt_tokens, attempt.completion_tokens
    attempt.beyond_hold_micro = charging.beyond_hold(route.price, prompt, completion, held)
    return charging.charge(route.price, prompt, completion, held)


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
    if attempt.ttft_seconds is None:  # measured when the first chunk arrived (failover.open_routes)
        attempt.ttft_seconds = result.ttft_seconds
    # The provider's usage is what it bills, also for an answer the buyer left before its end (the
    # relay reads on for it, bounded); without it, the text the provider sent is counted.
    if meter.usage is not None:
        attempt.prompt_tokens = meter.usage.prompt_tokens
        attempt.completion_tokens = meter.usage.completion_tokens
        attempt.usage_source = "upstream"
    else:
        counter = services(request).tokens
        attempt.prompt_tokens = counter.count_prompt(body)
        attempt.completion_tokens = counter.count_text("".join(meter.text_parts))
    # A provider that failed before generating anything delivered nothing: like a failed request,
    # that costs nothing (a buyer who leaves early still pays for the prompt).
    if attempt.listing is not None and (result.outcome != "upstream_error" or meter.text_parts):
        attempt.cost_micro = _cost(attempt, attempt.listing)


def _listing_id(attempt: Attempt) -> str:
    return attempt.listing.listing_id if attempt.listing is not None else ""


def _gateway_headers(attempt: Attempt, route: ListingRoute) -> dict[str, str]:
    return {"x-gateway-listing": route.public_id, "x-gateway-attempts": str(attempt.attempts)}


def _log_if_notable(attempt: Attempt, elapsed: float, slow_after: float) -> None:
    """One line for a request that failed on our or the provider's side, or was slow, naming the
    listing that served (or last failed) and how many attempts it took; the request id is bound."""
    if attempt.status < 500 and elapsed < slow_after:
        return
    fields = {
        "listing": attempt.listing.public_id if attempt.listing else None,
        "attempts": attempt.attempts,
        "model": attempt.model,
        "status": attempt.status,
        "outcome": attempt.outcome,
        "latency_ms": int(elapsed * 1000),
        "ttft_ms": int(attempt.ttft_seconds * 1000) if attempt.ttft_seconds is not None else None,
    }
    if attempt.status >= 500:
        log.warning("request_failed", **fields)
    else:
        log.warning("slow_request", **fields)


async def _finish(request: Request, attempt: Attempt) -> None:
    """Metrics and the usage event, exactly once per request that presented a valid key."""
    svc = services(request)
    elapsed = time.perf_counter() - attempt.started
    known_model = attempt.model if svc.listings.index.routes_for(attempt.model) else "other"
    metrics = svc.metrics
    metrics.child(metrics.requests, attempt.route, known_model, str(attempt.status)).inc()
    metrics.child(metrics.latency, attempt.route).observe(elapsed)
    if attempt.stream and attempt.ttft_seconds is not None:
        metrics.child(metrics.ttft, known_model).observe(attempt.ttft_seconds)
    _log_if_notable(attempt, elapsed, svc.settings.slow_request_seconds)
    if attempt.principal is None:
        return
    svc.keys.note_used(attempt.principal.key_id)
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
        ts_ms=int(svc.clock() * 1000),
        seller_id=attempt.listing.seller_id if attempt.listing else "",
        cost_micro=attempt.cost_micro,
        held_micro=attempt.held_micro or 0,
        beyond_hold_micro=attempt.beyond_hold_micro,
    )
    if attempt.beyond_hold_micro:
        _note_beyond_hold(svc, attempt, event)
    if attempt.listing is not None and attempt.outcome == "ok" and event.ttft_ms >= 0:
        svc.speed.observe(attempt.listing.listing_id, event.ttft_ms)
    view = svc.breaker_view
    health = [
        (listing_id, healthy, probe)
        for listing_id, healthy, probe in attempt.health
        if not healthy or probe or view.success_worth_recording(listing_id)
    ]

    def queue(pipe: Batch) -> _Queued:
        svc.meter.record_in(pipe, event)  # first: `results[0]` says whether the event was written
        settled = None
        if attempt.held_micro is not None:
            # Redis runs one connection's pipelined commands back to back: no settlement worker
            # sees the event before this settle has recorded its charge.
            settled = svc.hot.settle_in(
                pipe,
                buyer_id=event.user_id,
                request_id=event.request_id,
                cost_micro=attempt.cost_micro,
                late_cap_micro=attempt.held_micro,
            )
        if attempt.listing is not None:
            svc.stats.record_in(
                pipe,
                attempt.listing.listing_id,
                svc.clock(),
                attempt.outcome == "ok",
                event.latency_ms,
                event.ttft_ms,
            )
        releases = []
        for ticket in attempt.tickets:
            served = attempt.outcome in ("ok", "client_disconnected") and ticket.listing_id == _listing_id(attempt)
            used = attempt.prompt_tokens + attempt.completion_tokens if served else 0
            releases.append(svc.capacity.release_in(pipe, ticket, used))
        breaker_updates = [
            (listing_id, svc.breakers.record_in(pipe, listing_id, healthy, probe))
            for listing_id, healthy, probe in health
        ]
        return settled, releases, breaker_updates

    # Only a charge is worth waiting for, and a request with one has had its answer sent already.
    retry_for = FINISH_RETRY_SECONDS if event.cost_micro > 0 else 0.0
    results, tries, (settled, releases, breaker_updates) = await _execute_retrying(svc, queue, retry_for)
    if isinstance(results[0], Exception):
        svc.metrics.usage_events_failed.inc()
        # The log line is the record of last resort: it carries the whole event.
        log.error("usage_event_not_recorded", error=repr(results[0]), tries=tries, usage_event=event.fields())
        return
    svc.recent.add(event.request_id, event.user_id, event.cost_micro, svc.clock())
    if settled is not None:
        await _settled(svc, event, settled, results, retried=tries > 1)
    for listing_id, pending in breaker_updates:
        try:
            svc.breaker_view.apply_state(listing_id, await pending.resolve(results))
        except (RedisError, OSError) as exc:
            log.warning("breaker_not_updated", listing_id=listing_id, error=repr(exc))
    for release in releases:
        try:
            await release.resolve(results)  # retries a script Redis forgot (NOSCRIPT) with EVAL
        except (RedisError, OSError) as exc:
            log.warning("capacity_not_released", error=repr(exc))  # the lease expires it anyway


def _note_beyond_hold(svc: ProxyServices, attempt: Attempt, event: UsageEvent) -> None:
    """The provider billed more than the hold: the seller is still paid in full (settlement books
    the rest against the platform's exposure account); counted and logged for the operator."""
    svc.metrics.beyond_hold_micro.inc(attempt.beyond_hold_micro)
    log.warning(
        "usage_beyond_hold",
        listing=attempt.listing.public_id if attempt.listing else None,
        model=attempt.model,
        prompt_tokens=event.prompt_tokens,
        completion_tokens=event.completion_tokens,
        held_micro=event.held_micro,
        beyond_hold_micro=attempt.beyond_hold_micro,
    )


# While Redis is unreachable (restarting: refused, reset, still LOADING its data) the finishing
# pipeline of a charged request is tried again for this long: a usage event not written is a
# request served and never billed, and its hold stays reserved until swept.
FINISH_RETRY_SECONDS = 15.0
_FINISH_PAUSES = (0.05, 0.1, 0.2, 0.4, 0.8)  # then 1 s apart


def redis_unreachable(result: Any) -> bool:
    """Did the pipeline fail for want of Redis (worth trying again), rather than on a command?"""
    return isinstance(result, RedisConnectionError | RedisTimeoutError | OSError)


async def _execute_retrying(
    svc: ProxyServices, queue: Callable[[Batch], _Queued], retry_for: float
) -> tuple[list[Any], int, _Queued]:
    """Queue the finishing commands on a fresh pipeline and run it, again while Redis is
    unreachable, for up to `retry_for` seconds. Every command in it is safe to repeat: the hold
    settles at most once and settlement takes one usage row per request id."""
    give_up = time.monotonic() + retry_for
    tries = 0
    while True:
        batch = Batch(svc.redis)
        queued = queue(batch)
        tries += 1
        try:
            results = await batch.execute()
        except (RedisError, OSError) as exc:
            results = [exc]
        pause = _FINISH_PAUSES[tries - 1] if tries <= len(_FINISH_PAUSES) else 1.0
        if not redis_unreachable(results[0]) or time.monotonic() + pause > give_up:
            return results, tries, queued
        await asyncio.sleep(pause)


async def _renew_leases(request: Request, attempt: Attempt) -> None:
    """Keep a long stream's hold and capacity slots alive: one pipeline, failures only logged (the
    stream goes on; at worst a slot frees early or the hold is swept and the charge still stands)."""
    svc = services(request)
    pending: list[Pending[bool]] = []
    batch = Batch(svc.redis)
    if attempt.held_micro is not None and attempt.principal is not None:
        pending.append(
            svc.hot.renew_in(
                batch,
                buyer_id=attempt.principal.user_id,
                request_id=attempt.request_id,
                ttl_s=svc.settings.hold_ttl_seconds,
            )
        )
    pending.extend(svc.capacity.renew_in(batch, ticket) for ticket in attempt.tickets)
    try:
        results = await batch.execute()
        for item in pending:
            await item.resolve(results)
    except (RedisError, OSError) as exc:
        log.warning("leases_not_renewed", error=repr(exc))


async def _settled(
    svc: ProxyServices, event: UsageEvent, settled: Pending[int], results: list[Any], retried: bool = False
) -> None:
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


def hot_paths() -> dict[str, tuple[str, Callable[[Request], Awaitable[Response]]]]:
    """The `/v1` paths, answered by `hotpath.GatewayApp` without Starlette's middleware stack."""
    return {
        "/v1/chat/completions": ("POST", chat_completions),
        "/v1/embeddings": ("POST", embeddings),
        "/v1/models": ("GET", list_models),
    }
