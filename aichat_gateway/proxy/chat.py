"""The hot path: `/v1/chat/completions`, `/v1/embeddings` and `/v1/models`.

One request: authenticate the key (in-process cache), parse the body once, take the routes for
the model from the in-process listing snapshot, hold the worst case against the buyer's balance,
try the routes in router order until one answers (failover only before the buyer has seen a
byte), relay the answer, and finish the request exactly once (finish.py: metrics, the usage event,
the hold's settle). Steady state: no Postgres query, two Redis round trips (the hold; the
finishing batch), plus one per limited listing tried (its capacity).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from redis.exceptions import RedisError
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.accounts.errors import StoreUnavailable
from aichat_gateway.accounts.keys import KeyPrincipal
from aichat_gateway.config.logging import get_logger, mask, remember_secret
from aichat_gateway.config.money import usd
from aichat_gateway.marketplace.snapshot import Route as ListingRoute
from aichat_gateway.proxy import charging, failover, inbound, routing
from aichat_gateway.proxy.adapters import Adapter, AdapterError, UpstreamRequest
from aichat_gateway.proxy.edge import charge_id
from aichat_gateway.proxy.errors import (
    AuthenticationFailed,
    GatewayError,
    Unavailable,
    UpstreamFailed,
)
from aichat_gateway.proxy.failover import Opened
from aichat_gateway.proxy.finish import finish
from aichat_gateway.proxy.outcome import Outcome
from aichat_gateway.proxy.receipts import add_cost
from aichat_gateway.proxy.record import RequestRecord
from aichat_gateway.proxy.relay import RelayStream, StreamResult
from aichat_gateway.proxy.services import services
from aichat_gateway.redislua import Batch, Pending

log = get_logger(__name__)
_MAX_UPSTREAM_BODY = 32 * 1024 * 1024
DEFAULT_ANSWER_TOKENS = 4096  # a model outside the catalog, asked without max_tokens


async def chat_completions(request: Request) -> Response:
    svc = services(request)
    async with _accounted(request, "chat") as record:
        record.principal = await _authenticate(request)
        body = await inbound.read_json_body(request, svc.settings.max_body_bytes)
        chat = inbound.parse_chat_request(body, svc.settings)
        record.model, record.stream = chat.model, chat.stream
        record.estimate = functools.cache(lambda: _worst_case_tokens(request, body, chat.model, chat.max_tokens))
        routes = _routes_for(request, record, body, chat.max_tokens)
        answer_bound = (chat.max_tokens or _output_limit(request, chat.model)) * chat.choices
        prompt_bound = charging.prompt_tokens_bound(
            body["messages"], request.scope["state"]["body_size"], svc.catalog.part_allowance(chat.model)
        )
        await _hold(request, record, routes, prompt_bound, answer_bound)

        def build(route: ListingRoute, adapter: Adapter) -> UpstreamRequest:
            key = route.api_key.reveal()
            remember_secret(key)  # masked in this request's log lines, whatever its format
            return adapter.chat_request(body, route.upstream_model, chat.stream, route.base_url, key)

        opened, watch = await failover.open_watched(request, record, routes, build, chat.stream)
        if opened.chunks is None:
            answer = _finish_plain(request, record, opened, body, translate_as=chat.model)
            return _after_response(answer, request, record)

        async def on_done(result: StreamResult) -> None:
            svc.metrics.inflight_streams.dec()
            _account_stream(request, record, result, body)
            await finish(services(request), record)

        record.handed_off = True
        svc.metrics.inflight_streams.inc()
        return RelayStream(
            opened.response,
            opened.first_chunk,
            opened.chunks,
            opened.adapter.stream_translator(chat.model, chat.client_wants_usage, _receipt(record, opened.route)),
            watch,
            on_done,
            _gateway_headers(record, opened.route),
            renew=functools.partial(_renew_leases, request, record),
            renew_every=min(svc.settings.hold_ttl_seconds, svc.capacity.lease_seconds) / 3,
            stall_after=svc.settings.upstream_read_timeout,
            drain=svc.usage_drain,
            secret=opened.route.api_key.reveal(),
        )


async def embeddings(request: Request) -> Response:
    svc = services(request)
    async with _accounted(request, "embeddings") as record:
        record.principal = await _authenticate(request)
        body = await inbound.read_json_body(request, svc.settings.max_body_bytes)
        record.model = inbound.parse_embeddings_request(body)
        record.estimate = functools.cache(lambda: int(svc.tokens.count_prompt(body)))
        routes = _routes_for(request, record, body, 1)
        await _hold(request, record, routes, request.scope["state"]["body_size"], 0)

        def build(route: ListingRoute, adapter: Adapter) -> UpstreamRequest:
            key = route.api_key.reveal()
            remember_secret(key)
            return adapter.embeddings_request(body, route.upstream_model, route.base_url, key)

        opened, _ = await failover.open_watched(request, record, routes, build, False)
        return _after_response(_finish_plain(request, record, opened, body), request, record)


@contextlib.asynccontextmanager
async def _accounted(request: Request, route: str) -> AsyncIterator[RequestRecord]:
    """One RequestRecord per request; it is finished (metrics, usage event) exactly once: here, unless a
    response took that job over (`handed_off`) to do it after the answer is sent."""
    state = request.scope["state"]  # begin_request's dict (request.state would wrap it)
    record = RequestRecord(charge_id(state["request_id"], state["request_id_given"]), time.perf_counter(), route)
    try:
        yield record
    except GatewayError as exc:
        record.status, record.outcome = exc.status, Outcome.of_error(exc.code)
        if record.attempts:  # how many providers were tried before giving up
            exc.headers = {**(exc.headers or {}), "x-gateway-attempts": str(record.attempts)}
        raise
    finally:
        if not record.handed_off:
            await finish(services(request), record)


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
    request: Request, record: RequestRecord, routes: list[ListingRoute], prompt_bound: int, answer_bound: int
) -> None:
    assert record.principal is not None
    amount = charging.hold_amount(routes, prompt_bound, answer_bound)
    await charging.take_hold(services(request), record.principal, record.request_id, amount)
    record.held_micro = amount


def _receipt(record: RequestRecord, route: ListingRoute) -> Callable[[int, int], str]:
    """The cost of an answer of (prompt, completion) tokens on this route, as `usage.cost` shows it."""

    def cost_usd(prompt_tokens: int, completion_tokens: int) -> str:
        return usd(charging.charge(route.price, prompt_tokens, completion_tokens, record.held_micro or 0))

    return cost_usd


def _routes_for(
    request: Request, record: RequestRecord, body: dict[str, Any], max_tokens: int | None
) -> list[ListingRoute]:
    svc = services(request)
    principal = record.principal
    assert principal is not None
    return routing.routes_for(
        svc,
        record.model,
        record.request_id,
        body_size=request.scope["state"]["body_size"],
        max_tokens=max_tokens,
        preferences=routing.request_preferences(body),
        buyer_id=principal.user_id,
        key_defaults=svc.key_defaults.of(principal.key_id, principal.routing),
    )


def _after_response(response: Response, request: Request, record: RequestRecord) -> Response:
    """Record the request once the answer is on the wire: the buyer does not wait for Redis."""
    record.handed_off = True
    response.background = BackgroundTask(finish, services(request), record)
    return response


def _finish_plain(
    request: Request, record: RequestRecord, opened: Opened, body: dict[str, Any], translate_as: str | None = None
) -> Response:
    """A complete answer. Chat answers go through the route's adapter (`translate_as` is the model
    name the buyer asked for; OpenAI listings pass bytes through untouched); embeddings pass through."""
    status = opened.response.status_code
    raw = opened.first_chunk
    try:
        content = opened.adapter.chat_response(status, raw, translate_as) if translate_as is not None else raw
    except AdapterError:
        record.outcome = Outcome.UPSTREAM_ERROR
        raise UpstreamFailed("The upstream provider sent an unreadable answer.") from None
    record.ttft_seconds = time.perf_counter() - record.started
    record.status = status
    headers = _gateway_headers(record, opened.route)
    if status >= 400:
        record.outcome = Outcome.CLIENT_ERROR
        # A provider may quote the key it was sent, in a format no pattern knows: mask it exactly too.
        error_body = mask(content.decode("utf-8", "replace"), (opened.route.api_key.reveal(),)).encode()
        return Response(error_body, status_code=status, media_type="application/json", headers=headers)
    usage = opened.adapter.usage_of_response(raw)  # usually the only JSON parse of the answer
    if usage is not None:
        record.prompt_tokens, record.completion_tokens = usage.prompt_tokens, usage.completion_tokens
        record.usage_source = "upstream"
    else:
        try:
            answer = orjson.loads(content)
        except orjson.JSONDecodeError:
            record.outcome = Outcome.UPSTREAM_ERROR
            raise UpstreamFailed("The upstream provider sent an unreadable answer.") from None
        counter = services(request).tokens
        record.prompt_tokens = counter.count_prompt(body)
        record.completion_tokens = counter.count_text(_answer_text(answer))
    record.outcome = Outcome.OK
    record.cost_micro = _cost(record, opened.route)
    cost = usd(record.cost_micro)
    headers["x-gateway-cost-usd"] = cost
    return Response(add_cost(content, cost), status_code=status, media_type="application/json", headers=headers)


def _cost(record: RequestRecord, route: ListingRoute) -> int:
    """What the buyer pays for what was delivered (a cut stream: its delivered part); what it cost
    beyond the hold is noted on the record for settlement to pay the seller from the platform."""
    held, prompt, completion = record.held_micro or 0, record.prompt_tokens, record.completion_tokens
    record.beyond_hold_micro = charging.beyond_hold(route.price, prompt, completion, held)
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


def _account_stream(request: Request, record: RequestRecord, result: StreamResult, body: dict[str, Any]) -> None:
    meter = result.meter
    record.status = 200
    record.outcome = result.outcome
    if record.ttft_seconds is None:  # measured when the first chunk arrived (failover.open_routes)
        record.ttft_seconds = result.ttft_seconds
    # The provider's usage is what it bills, also for an answer the buyer left before its end (the
    # relay reads on for it, bounded); without it, the text the provider sent is counted.
    if meter.usage is not None:
        record.prompt_tokens = meter.usage.prompt_tokens
        record.completion_tokens = meter.usage.completion_tokens
        record.usage_source = "upstream"
    else:
        counter = services(request).tokens
        record.prompt_tokens = counter.count_prompt(body)
        record.completion_tokens = counter.count_text("".join(meter.text_parts))
    # A provider that failed before generating anything delivered nothing: like a failed request,
    # that costs nothing (a buyer who leaves early still pays for the prompt).
    if record.listing is not None and (result.outcome is not Outcome.UPSTREAM_ERROR or meter.text_parts):
        record.cost_micro = _cost(record, record.listing)


def _listing_id(record: RequestRecord) -> str:
    return record.listing.listing_id if record.listing is not None else ""


def _gateway_headers(record: RequestRecord, route: ListingRoute) -> dict[str, str]:
    return {"x-gateway-listing": route.public_id, "x-gateway-attempts": str(record.attempts)}


async def _renew_leases(request: Request, record: RequestRecord) -> None:
    """Keep a long stream's hold and capacity slots alive: one pipeline, failures only logged (the
    stream goes on; at worst a slot frees early or the hold is swept and the charge still stands)."""
    svc = services(request)
    pending: list[Pending[bool]] = []
    batch = Batch(svc.redis)
    if record.held_micro is not None and record.principal is not None:
        pending.append(
            svc.hot.renew_in(
                batch,
                buyer_id=record.principal.user_id,
                request_id=record.request_id,
                ttl_s=svc.settings.hold_ttl_seconds,
            )
        )
    pending.extend(svc.capacity.renew_in(batch, ticket) for ticket in record.tickets)
    try:
        results = await batch.execute()
        for item in pending:
            await item.resolve(results)
    except (RedisError, OSError) as exc:
        log.warning("leases_not_renewed", error=repr(exc))


def hot_paths() -> dict[str, tuple[str, Callable[[Request], Awaitable[Response]]]]:
    """The `/v1` paths, answered by `hotpath.GatewayApp` without Starlette's middleware stack."""
    return {
        "/v1/chat/completions": ("POST", chat_completions),
        "/v1/embeddings": ("POST", embeddings),
        "/v1/models": ("GET", list_models),
    }
