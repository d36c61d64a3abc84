"""The market tables' rules: sorting (unmeasured figures last), the sort links, how figures read,
and the quote form's body."""

from __future__ import annotations

from aichat_gateway.dashboard.forms import Form
from aichat_gateway.dashboard.market import quote_body
from aichat_gateway.dashboard.offertable import (
    Sorting,
    aria_sort,
    by_model,
    millis,
    offer_rows,
    parse_sorting,
    per_million,
    percent,
    quote_rows,
    sort_href,
    sort_offers,
)
from aichat_gateway.marketplace.offers import PublicOffer
from aichat_gateway.marketplace.pricing import Price, quote
from aichat_gateway.marketplace.stats import ListingStats
from aichat_gateway.proxy.quote import OfferQuote, Quotes


def offer(
    offer_id: str,
    input_micro: int = 1_000_000,
    *,
    success: float | None = None,
    latency: int | None = None,
    model: str = "m",
) -> PublicOffer:
    requests = 0 if success is None else 10
    return PublicOffer(
        offer_id, model, input_micro, 2 * input_micro, "active", ListingStats(requests, success, latency, None)
    )


def ids(offers: list[PublicOffer]) -> list[str]:
    return [o.offer_id for o in offers]


def test_without_a_sort_parameter_the_cheapest_input_comes_first() -> None:
    assert parse_sorting(None, None) == Sorting("input", False)


def test_an_unknown_column_falls_back_to_the_default_sort() -> None:
    assert parse_sorting("seller_email", "desc") == Sorting("input", False)


def test_a_column_without_an_order_shows_its_best_first() -> None:
    assert parse_sorting("success", None) == Sorting("success", True)
    assert parse_sorting("latency", None) == Sorting("latency", False)
    assert parse_sorting("latency", "sideways") == Sorting("latency", False)


def test_sorting_by_input_price_orders_by_price_either_way() -> None:
    offers = [offer("b", 3), offer("a", 1), offer("c", 2)]
    assert ids(sort_offers(offers, Sorting("input", False))) == ["a", "c", "b"]
    assert ids(sort_offers(offers, Sorting("input", True))) == ["b", "c", "a"]


def test_equal_prices_are_ordered_by_offer_id_in_both_directions() -> None:
    offers = [offer("z", 1), offer("a", 1)]
    assert ids(sort_offers(offers, Sorting("input", False))) == ["a", "z"]
    assert ids(sort_offers(offers, Sorting("input", True))) == ["a", "z"]


def test_an_offer_nobody_has_measured_sorts_last_both_ways() -> None:
    offers = [offer("new"), offer("fast", latency=25), offer("slow", latency=800)]
    assert ids(sort_offers(offers, Sorting("latency", False))) == ["fast", "slow", "new"]
    assert ids(sort_offers(offers, Sorting("latency", True))) == ["slow", "fast", "new"]


def test_the_sorted_columns_link_sorts_it_the_other_way_and_keeps_the_filter() -> None:
    sorting = Sorting("input", False)
    assert sort_href("/app/market", sorting, "input", {"model": "gpt-4o"}) == (
        "/app/market?model=gpt-4o&sort=input&order=desc"
    )


def test_another_columns_link_starts_with_its_best_first_and_drops_an_empty_filter() -> None:
    sorting = Sorting("input", False)
    assert sort_href("/app/market", sorting, "success", {"model": ""}) == "/app/market?sort=success&order=desc"


def test_only_the_sorted_column_carries_aria_sort() -> None:
    sorting = Sorting("ttft", True)
    assert aria_sort(sorting, "ttft") == "descending"
    assert aria_sort(sorting, "input") is None


def test_figures_read_as_people_read_them() -> None:
    assert percent(0.9871) == "98.7%"
    assert percent(1.0) == "100%"
    assert percent(None) == "—"
    assert millis(1600) == "1,600 ms"
    assert millis(None) == "—"
    assert per_million(150_000) == "$0.15"
    assert per_million(2_500_000) == "$2.50"


def test_rows_carry_the_readable_figures_in_the_sorted_order() -> None:
    rows = offer_rows([offer("b", 2_000_000, success=0.5, latency=100), offer("a", 1_000_000)], Sorting("input", True))
    assert [(r.offer_id, r.input_price, r.output_price, r.success_rate, r.latency) for r in rows] == [
        ("b", "$2.00", "$4.00", "50%", "100 ms"),
        ("a", "$1.00", "$2.00", "—", "—"),
    ]


def test_offers_are_grouped_per_model_in_name_order() -> None:
    grouped = by_model([offer("1", model="zeta"), offer("2", model="alpha"), offer("3", model="zeta")])
    assert list(grouped) == ["alpha", "zeta"]
    assert ids(grouped["zeta"]) == ["1", "3"]


def test_the_first_quoted_offer_is_the_one_that_serves() -> None:
    cheap, dear = Price(1_000_000, 2_000_000), Price(5_000_000, 10_000_000)
    quotes = Quotes(
        "m",
        1000,
        500,
        (OfferQuote("cheap", cheap, quote(cheap, 1000, 500)), OfferQuote("dear", dear, quote(dear, 1000, 500))),
    )
    rows = quote_rows(quotes)
    assert [(r.offer_id, r.serves, r.min_cost, r.max_cost) for r in rows] == [
        ("cheap", True, "$0.001", "$0.002"),
        ("dear", False, "$0.005", "$0.01"),
    ]


def test_the_quote_form_sends_the_prompt_as_one_user_message() -> None:
    form = Form(values={"model": "m", "prompt": "hello", "max_tokens": "40"})
    assert quote_body(form) == {"model": "m", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 40}


def test_an_empty_max_tokens_is_left_to_the_model() -> None:
    body = quote_body(Form(values={"model": "m", "prompt": "hello", "max_tokens": " "}))
    assert body is not None and "max_tokens" not in body


def test_a_blank_prompt_and_a_word_for_max_tokens_are_both_refused() -> None:
    form = Form(values={"model": "m", "prompt": "  ", "max_tokens": "ten"})
    assert quote_body(form) is None
    assert set(form.errors) == {"prompt", "max_tokens"}
