"""The market pages' tables as plain data: which column sorts, in which order, and how each figure
reads. Pure functions over the marketplace's `PublicOffer`s and the proxy's `Quotes`.

Sorting is a GET parameter (`?sort=input&order=desc`) rendered on the server, so it works without
script; a figure nobody has measured yet (no request in the last hour) sorts last either way,
because "unknown" is neither fast nor slow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from aichat_gateway.config.money import usd
from aichat_gateway.dashboard.templating import dollars
from aichat_gateway.marketplace.offers import PublicOffer
from aichat_gateway.proxy.quote import Quotes

NOT_MEASURED = "—"
SortKey = Callable[[PublicOffer], float | int | str | None]


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str  # the header's text; its sort link is named "Sort by <label>"
    sort_key: SortKey
    numeric: bool = True
    descending_first: bool = False  # a first click shows the best first: most, not least, successful


COLUMNS: tuple[Column, ...] = (
    Column("offer", "Offer", lambda o: o.offer_id, numeric=False),
    Column("input", "Input price", lambda o: o.input_micro_per_million),
    Column("output", "Output price", lambda o: o.output_micro_per_million),
    Column("success", "Success rate", lambda o: o.last_hour.success_rate, descending_first=True),
    Column("latency", "Latency p50", lambda o: o.last_hour.p50_latency_ms),
    Column("ttft", "TTFT p50", lambda o: o.last_hour.p50_ttft_ms),
    Column("requests", "Requests", lambda o: o.last_hour.requests, descending_first=True),
    Column("status", "Status", lambda o: o.status, numeric=False),
)
BY_KEY: Mapping[str, Column] = {c.key: c for c in COLUMNS}
DEFAULT_SORT = "input"


@dataclass(frozen=True, slots=True)
class Sorting:
    column: str
    descending: bool

    @property
    def order(self) -> str:
        return "desc" if self.descending else "asc"


def parse_sorting(sort: str | None, order: str | None) -> Sorting:
    """The page's `sort` and `order` parameters; anything unknown falls back to cheapest first."""
    column = BY_KEY.get(sort or "")
    if column is None:
        return Sorting(DEFAULT_SORT, False)
    if order in ("asc", "desc"):
        return Sorting(column.key, order == "desc")
    return Sorting(column.key, column.descending_first)


def sort_offers(offers: Iterable[PublicOffer], sorting: Sorting) -> list[PublicOffer]:
    """Sorted by the column, ties by offer id; unmeasured figures last in both orders."""
    key = BY_KEY[sorting.column].sort_key
    by_id = sorted(offers, key=lambda o: o.offer_id)
    known = [o for o in by_id if key(o) is not None]
    unknown = [o for o in by_id if key(o) is None]
    # sorted() is stable, so equal values keep the offer-id order in both directions
    known.sort(key=lambda o: key(o), reverse=sorting.descending)  # type: ignore[arg-type, return-value]
    return known + unknown


def aria_sort(sorting: Sorting, column: str) -> str | None:
    if sorting.column != column:
        return None
    return "descending" if sorting.descending else "ascending"


def sort_href(path: str, sorting: Sorting, column: str, extra: Mapping[str, str] | None = None) -> str:
    """The link that sorts by `column`: the other way round if it is the sorted one."""
    if sorting.column == column:
        order = "asc" if sorting.descending else "desc"
    else:
        order = "desc" if BY_KEY[column].descending_first else "asc"
    params = {k: v for k, v in (extra or {}).items() if v}
    params.update({"sort": column, "order": order})
    return f"{path}?{urlencode(params)}"


def percent(rate: float | None) -> str:
    """0.9871 -> "98.7%", 1.0 -> "100%", None -> a dash."""
    if rate is None:
        return NOT_MEASURED
    text = f"{rate * 100:.1f}".removesuffix(".0")
    return f"{text}%"


def millis(value: int | None) -> str:
    return NOT_MEASURED if value is None else f"{value:,} ms"


def per_million(micro: int) -> str:
    """Micro-USD per million tokens as the page shows it: "$0.15"."""
    return f"${dollars(usd(micro))}"


@dataclass(frozen=True, slots=True)
class OfferRow:
    offer_id: str
    model: str
    input_price: str
    output_price: str
    success_rate: str
    latency: str
    ttft: str
    requests: str
    status: str


def offer_rows(offers: Iterable[PublicOffer], sorting: Sorting) -> list[OfferRow]:
    return [
        OfferRow(
            offer_id=o.offer_id,
            model=o.model,
            input_price=per_million(o.input_micro_per_million),
            output_price=per_million(o.output_micro_per_million),
            success_rate=percent(o.last_hour.success_rate),
            latency=millis(o.last_hour.p50_latency_ms),
            ttft=millis(o.last_hour.p50_ttft_ms),
            requests=f"{o.last_hour.requests:,}",
            status=o.status,
        )
        for o in sort_offers(offers, sorting)
    ]


def by_model(offers: Iterable[PublicOffer]) -> dict[str, list[PublicOffer]]:
    """Offers grouped per model, models in name order."""
    grouped: dict[str, list[PublicOffer]] = {}
    for offer in sorted(offers, key=lambda o: o.model):
        grouped.setdefault(offer.model, []).append(offer)
    return grouped


@dataclass(frozen=True, slots=True)
class QuoteRow:
    offer_id: str
    input_price: str
    output_price: str
    min_cost: str
    max_cost: str
    serves: bool  # the offer the router would send this request to now


def quote_rows(quotes: Quotes) -> list[QuoteRow]:
    return [
        QuoteRow(
            offer_id=q.offer_id,
            input_price=per_million(q.price.input_micro_per_million),
            output_price=per_million(q.price.output_micro_per_million),
            min_cost=f"${dollars(usd(q.cost.low_micro))}",
            max_cost=f"${dollars(usd(q.cost.high_micro))}",
            serves=index == 0,
        )
        for index, q in enumerate(quotes.offers)
    ]
