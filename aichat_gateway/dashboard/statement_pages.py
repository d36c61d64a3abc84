"""The buyer's statements as pages: transactions (`/app/billing/transactions`, filters, paging and a
CSV link with the same filters) and usage per request (`/app/billing/usage`), from the same package
functions as `GET /api/billing/transactions`, `.csv` and `/usage` (billing/statements.py).

Filters are a GET form, so a filtered page is a link that can be shared or reloaded. Dates are
whole UTC days, both ends included (the API's `until` is exclusive: the day after is sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway import queryparams
from aichat_gateway.billing.errors import InvalidBillingInput
from aichat_gateway.billing.statements import (
    BUYER_KINDS,
    TransactionFilter,
    TransactionPage,
    UsageFilter,
    UsagePage,
    buyer_transactions,
    buyer_usage,
)
from aichat_gateway.dashboard.forms import Form
from aichat_gateway.dashboard.pages import page_user
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import Templates

PAGE_SIZE = 50
MAX_MODEL_CHARS = 200


@dataclass
class DateRange:
    since: datetime | None = None
    until: datetime | None = None  # exclusive: the day after the last day asked for
    errors: dict[str, str] = field(default_factory=dict)


def day_range(since_text: str, until_text: str) -> DateRange:
    """Pure: "From" and "To" dates (YYYY-MM-DD, either may be empty) as UTC instants, the "To"
    day included; a problem per field, and none of the range when there is one."""
    found = DateRange()
    since_day = _day(since_text, "since", found.errors)
    until_day = _day(until_text, "until", found.errors)
    if since_day and until_day and until_day < since_day:
        found.errors["until"] = "The end date is before the start date."
    if found.errors:
        return DateRange(errors=found.errors)
    if since_day:
        found.since = datetime.combine(since_day, time(), UTC)
    if until_day:
        found.until = datetime.combine(until_day + timedelta(days=1), time(), UTC)
    return found


def _day(text: str, name: str, errors: dict[str, str]) -> date | None:
    text = text.strip()
    if not text:
        return None
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
    except ValueError:
        pass
    errors[name] = "Enter a date as YYYY-MM-DD."
    return None


def link(path: str, params: dict[str, str]) -> str:
    """Pure: `path` with the non-empty parameters."""
    kept = {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(kept)}" if kept else path


def csv_link(kind: str, days: DateRange) -> str:
    """Pure: the CSV export of what the page shows (the API's exclusive `until`)."""
    return link(
        "/api/billing/transactions.csv",
        {
            "kind": kind,
            "since": days.since.date().isoformat() if days.since else "",
            "until": days.until.date().isoformat() if days.until else "",
        },
    )


def _before(raw: str | None) -> int | None:
    """A page's `before` (a ledger entry id); anything else is the first page."""
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return None
    return int(raw)


class StatementPages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    async def transactions(self, request: Request) -> Response:
        user = await page_user(request)
        params = request.query_params
        form = Form(values={name: params.get(name, "") for name in ("kind", "since", "until")})
        kind = form.values["kind"]
        if kind and kind not in BUYER_KINDS:
            form.refuse("Choose a kind from the list.", "kind")
            kind = ""
        days = day_range(form.values["since"], form.values["until"])
        form.errors.update(days.errors)
        before = _before(params.get("before"))
        page = TransactionPage([], None)
        if not form.errors:  # a filter that cannot be read shows nothing rather than everything
            page = await buyer_transactions(
                services(request).db,
                user.id,
                TransactionFilter(kind or None, days.since, days.until),
                before=before,
                limit=PAGE_SIZE,
            )
        filters = {"kind": kind, "since": form.values["since"], "until": form.values["until"]}
        context: dict[str, Any] = {
            "form": form,
            "kinds": BUYER_KINDS,
            "rows": [row.public() for row in page.rows],
            "filtered": any(filters.values()),
            "paged": before is not None,
            "first_link": link("/app/billing/transactions", filters),
            "older_link": (
                link("/app/billing/transactions", {**filters, "before": str(page.next_before)})
                if page.next_before is not None
                else None
            ),
            "csv_link": csv_link(kind, days),
        }
        status = 400 if form.errors else 200
        return self.templates.render(request, "billing/transactions.html", context, user=user, status_code=status)

    async def usage(self, request: Request) -> Response:
        user = await page_user(request)
        params = request.query_params
        form = Form(values={name: params.get(name, "") for name in ("model", "since", "until")})
        model = form.values["model"].strip()
        if len(model) > MAX_MODEL_CHARS or "\x00" in model:
            form.refuse(f"A model id is at most {MAX_MODEL_CHARS} characters.", "model")
            model = ""
        days = day_range(form.values["since"], form.values["until"])
        form.errors.update(days.errors)
        try:
            after = queryparams.cursor(params, InvalidBillingInput, queryparams.cursor_time, queryparams.cursor_text)
        except InvalidBillingInput:
            after = None  # a mangled link: start from the newest
        page = UsagePage([], None)
        if not form.errors:
            page = await buyer_usage(
                services(request).db,
                user.id,
                UsageFilter(model=model or None, since=days.since, until=days.until),
                after=after,
                limit=PAGE_SIZE,
            )
        filters = {"model": model, "since": form.values["since"], "until": form.values["until"]}
        older = None
        if page.next_after is not None:
            older = link("/app/billing/usage", {**filters, "cursor": queryparams.encode_cursor(*page.next_after)})
        context: dict[str, Any] = {
            "form": form,
            "rows": [row.public() for row in page.rows],
            "filtered": any(filters.values()),
            "paged": after is not None,
            "first_link": link("/app/billing/usage", filters),
            "older_link": older,
        }
        status = 400 if form.errors else 200
        return self.templates.render(request, "billing/usage.html", context, user=user, status_code=status)

    def routes(self) -> list[Route]:
        return [
            Route("/app/billing/transactions", self.transactions, methods=["GET"]),
            Route("/app/billing/usage", self.usage, methods=["GET"]),
        ]
