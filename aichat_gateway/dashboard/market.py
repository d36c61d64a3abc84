"""The marketplace browser: every model's offers (`/app/market`), one model's page
(`/app/market/{model}`) and the price of a prompt at each offer (`/app/market/quote`).

The figures come from the same functions as the public API: `marketplace.offers.current_offers`
(GET /api/marketplace/offers) and `proxy.quote.quote_offers` (POST /api/marketplace/quote).
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway.dashboard.forms import Form, read_form, validate
from aichat_gateway.dashboard.offertable import (
    COLUMNS,
    Sorting,
    aria_sort,
    by_model,
    offer_rows,
    parse_sorting,
    per_million,
    quote_rows,
    sort_href,
)
from aichat_gateway.dashboard.pages import page_user
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import PageUser, Templates
from aichat_gateway.marketplace.offers import MAX_MODEL_CHARS, current_offers
from aichat_gateway.proxy.errors import InvalidRequest, ModelNotFound
from aichat_gateway.proxy.quote import MAX_BODY, Quotes, quote_offers
from aichat_gateway.proxy.schemas import QuoteRequest

QUOTE_FIELDS = ("model", "prompt", "max_tokens")
# The API's body field a problem names -> the form's field that shows it.
_FIELD_OF_PARAM = {"messages": "prompt", "prompt_tokens": "prompt"}


def _sorting(request: Request) -> Sorting:
    return parse_sorting(request.query_params.get("sort"), request.query_params.get("order"))


def _table_helpers(request: Request, sorting: Sorting, extra: dict[str, str]) -> dict[str, Any]:
    """What the offers table macro needs to draw its sortable headers."""
    path = request.url.path
    return {
        "sorting": sorting,
        "columns": COLUMNS,
        "aria_sort": lambda column: aria_sort(sorting, column),
        "sort_href": lambda column: sort_href(path, sorting, column, extra),
    }


def quote_body(form: Form) -> dict[str, object] | None:
    """Pure: the API's quote body from the form, or None with the form's problems noted.
    The prompt is one user message, counted like a chat request's."""
    prompt = form.values["prompt"]
    if not prompt.strip():
        form.refuse("Type the prompt to price.", "prompt")
    elif len(prompt.encode()) > MAX_BODY:
        form.refuse(f"The prompt must be at most {MAX_BODY:,} bytes.", "prompt")
    data: dict[str, object] = {"model": form.values["model"], "messages": [{"role": "user", "content": prompt}]}
    max_tokens = form.values["max_tokens"].strip()
    if max_tokens:
        if not max_tokens.isdigit():
            form.refuse("max_tokens must be a whole number (0 or more).", "max_tokens")
        else:
            data["max_tokens"] = int(max_tokens)
    return data if form.ok else None


class MarketPages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    async def market(self, request: Request) -> Response:
        user = await page_user(request)
        svc = services(request)
        chosen = request.query_params.get("model", "")[:MAX_MODEL_CHARS]
        grouped = by_model(await current_offers(svc, chosen or None))
        shown = {chosen: grouped.get(chosen, [])} if chosen else grouped
        sorting = _sorting(request)
        context = {
            "models": svc.listings.index.models(),
            "chosen": chosen,
            "tables": [(model, offer_rows(items, sorting)) for model, items in shown.items()],
            **_table_helpers(request, sorting, {"model": chosen}),
        }
        return self.templates.render(request, "market/index.html", context, user=user)

    async def model_page(self, request: Request) -> Response:
        user = await page_user(request)
        model = request.path_params["model"]
        svc = services(request)
        listed = svc.catalog.get(model)
        offers = await current_offers(svc, model) if len(model) <= MAX_MODEL_CHARS else []
        if listed is None and not offers:
            raise HTTPException(404)
        sorting = _sorting(request)
        context = {
            "model": model,
            "listed": listed,
            "list_input": per_million(listed.input_micro_per_million) if listed else None,
            "list_output": per_million(listed.output_micro_per_million) if listed else None,
            "rows": offer_rows(offers, sorting),
            **_table_helpers(request, sorting, {}),
        }
        return self.templates.render(request, "market/model.html", context, user=user)

    async def quote_form(self, request: Request) -> Response:
        user = await page_user(request)
        form = Form(values={"model": request.query_params.get("model", ""), "prompt": "", "max_tokens": ""})
        return self._quote_page(request, user, form, None)

    async def quote(self, request: Request) -> Response:
        user = await page_user(request)
        form = await read_form(request, QUOTE_FIELDS)
        data = quote_body(form)
        body = validate(form, QuoteRequest, data) if data is not None else None
        quotes = None
        if body is not None:
            try:
                quotes = quote_offers(services(request), body)
            except (InvalidRequest, ModelNotFound) as exc:
                form.refuse(exc.message, _FIELD_OF_PARAM.get(exc.param or "", exc.param))
        for param, field in _FIELD_OF_PARAM.items():
            if param in form.errors:
                form.errors.setdefault(field, form.errors.pop(param))
        status = 200 if form.ok else 400
        return self._quote_page(request, user, form, quotes, status)

    def _quote_page(
        self, request: Request, user: PageUser, form: Form, quotes: Quotes | None, status: int = 200
    ) -> Response:
        context = {
            "form": form,
            "models": services(request).listings.index.models(),
            "quotes": quotes,
            "rows": quote_rows(quotes) if quotes is not None else [],
        }
        return self.templates.render(request, "market/quote.html", context, user=user, status_code=status)

    def routes(self) -> list[Route]:
        return [
            Route("/app/market", self.market, methods=["GET"]),
            Route("/app/market/quote", self.quote_form, methods=["GET"]),
            Route("/app/market/quote", self.quote, methods=["POST"]),
            Route("/app/market/{model:path}", self.model_page, methods=["GET"]),
        ]
