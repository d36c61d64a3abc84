"""`marketplace/pricing.py`: integer micro-USD price math, its rounding rules and `quote`.

Money never passes through a float: every result is checked to be an `int`, also for token
counts far beyond any real request.
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from aichat_gateway import apibody
from aichat_gateway.config.money import MICRO
from aichat_gateway.marketplace.errors import InvalidListing
from aichat_gateway.marketplace.pricing import (
    Price,
    PriceError,
    Quote,
    cost_micro,
    multiplied,
    parse_multiplier,
    parse_price,
    parse_usd,
    quote,
    usd,
)
from aichat_gateway.marketplace.schemas import ListingPatch

HUGE = 10**30  # far beyond any real token count: Python ints do not overflow, floats would lose cents

# ---- cost_micro ---------------------------------------------------------------------------------


def test_a_request_costs_its_tokens_at_the_price_per_million() -> None:
    assert cost_micro(Price(150_000, 600_000), 1_000_000, 1_000_000) == 750_000


def test_a_cost_rounds_up_to_a_whole_micro_usd_so_no_served_request_is_free() -> None:
    assert cost_micro(Price(1, 1), 1, 0) == 1


def test_an_exact_half_micro_usd_rounds_up() -> None:
    assert cost_micro(Price(500_000, 0), 1, 0) == 1  # 0.5 micro-USD


def test_a_whole_micro_usd_is_not_rounded_further() -> None:
    assert cost_micro(Price(1_000_000, 0), 3, 0) == 3


def test_zero_prices_cost_nothing() -> None:
    assert cost_micro(Price(0, 0), 5_000, 5_000) == 0


def test_zero_tokens_cost_nothing() -> None:
    assert cost_micro(Price(150_000, 600_000), 0, 0) == 0


def test_huge_token_counts_are_exact_integers() -> None:
    cost = cost_micro(Price(10_000_000_000, 10_000_000_000), HUGE, HUGE)
    assert isinstance(cost, int) and cost == 2 * 10_000 * HUGE


# ---- multiplied ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "multiplier, expected", [("0.01", Price(1_500, 6_000)), ("100", Price(15_000_000, 60_000_000))]
)
def test_the_smallest_and_largest_multipliers_scale_exactly(multiplier: str, expected: Price) -> None:
    assert multiplied(Price(150_000, 600_000), parse_multiplier(multiplier)) == expected


def test_a_multiplied_price_rounds_half_up() -> None:
    assert multiplied(Price(5, 15), Decimal("0.1")) == Price(1, 2)  # 0.5 -> 1, 1.5 -> 2


def test_a_multiplied_price_below_half_a_micro_rounds_to_zero() -> None:
    assert multiplied(Price(4, 0), Decimal("0.1")) == Price(0, 0)


@pytest.mark.parametrize("text", ["0.00999", "100.0001", "0", "-1", "1.00001", "inf"])
def test_a_multiplier_out_of_bounds_or_too_precise_is_refused(text: str) -> None:
    with pytest.raises(PriceError):
        parse_multiplier(text)


# ---- parse_usd / usd ----------------------------------------------------------------------------


def test_a_usd_string_becomes_integer_micro_usd() -> None:
    assert parse_usd("0.15", "price") == 150_000


def test_a_usd_float_is_refused() -> None:
    with pytest.raises(PriceError, match="decimal string"):
        parse_usd(0.15, "price")


def test_a_price_cap_of_zero_is_a_valid_cap() -> None:
    assert parse_usd("0", "provider.max_price.prompt") == 0


@given(st.integers(-(10**15), 10**15))
def test_usd_formats_and_parses_back_exactly(micro: int) -> None:
    text = usd(micro)
    assert Decimal(text) * 1_000_000 == micro


# ---- quote --------------------------------------------------------------------------------------


def test_a_quote_ranges_from_the_prompt_alone_to_the_prompt_plus_every_allowed_token() -> None:
    assert quote(Price(150_000, 600_000), 1_000, 500) == Quote(low_micro=150, high_micro=450)


def test_a_quote_rounds_each_end_up() -> None:
    assert quote(Price(1, 1), 1, 1) == Quote(low_micro=1, high_micro=1)


def test_a_quote_at_zero_prices_is_free() -> None:
    assert quote(Price(0, 0), 10_000, 10_000) == Quote(0, 0)


def test_a_quote_for_no_answer_tokens_is_a_single_amount() -> None:
    q = quote(Price(150_000, 600_000), 2_000, 0)
    assert q.low_micro == q.high_micro == 300


def test_a_quote_with_huge_counts_is_exact_integers() -> None:
    q = quote(Price(1, 3), HUGE, HUGE)
    assert (q.low_micro, q.high_micro) == (HUGE // 1_000_000, 4 * HUGE // 1_000_000)
    assert isinstance(q.low_micro, int) and isinstance(q.high_micro, int)


@pytest.mark.parametrize("prompt, max_tokens", [(-1, 10), (10, -1), (1.0, 10), (10, 2.5), (True, 10), ("10", 10)])
def test_a_quote_refuses_counts_that_are_not_non_negative_integers(prompt: object, max_tokens: object) -> None:
    with pytest.raises(PriceError):
        quote(Price(1, 1), prompt, max_tokens)  # type: ignore[arg-type]


@given(st.integers(0, 10**7), st.integers(0, 10**7), st.integers(0, 10**9), st.integers(0, 10**9))
def test_a_quote_brackets_the_cost_of_any_answer_within_max_tokens(inp: int, out: int, prompt: int, cap: int) -> None:
    price = Price(inp, out)
    q = quote(price, prompt, cap)
    assert q.low_micro <= cost_micro(price, prompt, cap // 2) <= q.high_micro


# ---- listing prices are read as strictly as every other amount of money ---------------------------

# What Python's Decimal() takes but a price must not be: exponents, underscores, non-ASCII digits,
# whitespace, NaN and infinity, signs, bare points, and zero or negative amounts.
NOT_PRICES = [
    "1e3",
    "1E3",
    "1e-999999999",
    "0e5",
    "1_000",
    "0.1_5",
    "\u0661\u0662",  # Arabic-Indic 12
    "\uff11\uff12",  # fullwidth 12
    "\uff10.\uff11\uff15",  # fullwidth 0.15
    "\U0001d7cf",  # mathematical bold 1
    "NaN",
    "nan",
    "sNaN",
    "Infinity",
    "-Infinity",
    "inf",
    " 1",
    "1 ",
    "\t1",
    "1\n",
    "\u00a01",  # no-break space
    "1\u2003",  # em space
    "+1",
    "--1",
    ".5",
    "1.",
    "0x10",
    "1,5",
    "",
    "0",
    "0.000000",
    "-0",
    "-1",
    "-0.000001",
    "0.0000001",
    "10000.000001",
]
NOT_MULTIPLIERS = [t for t in NOT_PRICES if t != "10000.000001"] + ["1e0", "1E+1", "0.0001", "0.009", "100.0001"]
PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def explicit(text: object) -> dict[str, object]:
    return {"input_usd_per_million": text, "output_usd_per_million": "0.6"}


def parse_pricing(pricing: object) -> tuple[Decimal | None, Price | None]:
    """A listing body's `pricing`, read as the API reads it (schemas.Pricing)."""
    body = apibody.validate(ListingPatch, {"pricing": pricing}, InvalidListing)
    assert body.pricing is not None
    return body.pricing.parsed()


@pytest.mark.parametrize("text", NOT_PRICES, ids=repr)
def test_an_explicit_price_that_is_not_a_positive_plain_decimal_is_a_400_naming_it(text: str) -> None:
    with pytest.raises(InvalidListing) as caught:
        parse_pricing(explicit(text))
    assert caught.value.param == "pricing.input_usd_per_million"
    assert "pricing.input_usd_per_million" in caught.value.message


@pytest.mark.parametrize("text", NOT_MULTIPLIERS, ids=repr)
def test_a_multiplier_that_is_not_a_plain_decimal_in_range_is_a_400_naming_it(text: str) -> None:
    with pytest.raises(InvalidListing) as caught:
        parse_pricing({"multiplier": text})
    assert caught.value.param == "pricing.multiplier"
    assert "pricing.multiplier" in caught.value.message


@pytest.mark.parametrize("value", [0.15, 1, 0, True, [], {}], ids=repr)
def test_a_json_number_or_other_non_string_price_is_refused_naming_it(value: object) -> None:
    for pricing, param in (
        (explicit(value), "pricing.input_usd_per_million"),
        ({"multiplier": value}, "pricing.multiplier"),
    ):
        with pytest.raises(InvalidListing) as caught:
            parse_pricing(pricing)
        assert caught.value.param == param


@pytest.mark.parametrize(
    "pricing",
    [{}, {"multiplier": None}, explicit(None), {"input_usd_per_million": "1"}, {"multiplier": "1", **explicit("1")}],
    ids=repr,
)
def test_pricing_that_is_neither_a_multiplier_nor_two_prices_is_refused_naming_pricing(
    pricing: dict[str, object],
) -> None:
    with pytest.raises(InvalidListing) as caught:
        parse_pricing(pricing)
    assert caught.value.param == "pricing"
    assert "multiplier" in caught.value.message and "input_usd_per_million" in caught.value.message


@pytest.mark.parametrize(
    ("text", "micro"), [("0.000001", 1), ("0.15", 150_000), ("007.5", 7_500_000), ("10000", 10**10)]
)
def test_a_positive_plain_decimal_price_is_its_exact_micro_usd(text: str, micro: int) -> None:
    assert parse_price(text, "price") == micro


# Strings that look like numbers often enough to reach every branch, and anything at all.
PRICE_LIKE = (
    st.sampled_from(NOT_PRICES + NOT_MULTIPLIERS)
    | st.from_regex(r"\A-?[0-9]{0,6}(\.[0-9]{0,8})?\Z")
    | st.text(alphabet="0123456789.-+eE_ \u0660\u0661\uff10\uff11naif", max_size=14)
    | st.text(max_size=24)
)


@given(PRICE_LIKE)
@example("0.000001")
@example("10000")
def test_any_string_parses_to_its_exact_positive_micro_usd_or_is_a_price_error(text: str) -> None:
    try:
        micro = parse_price(text, "pricing.input_usd_per_million")
    except PriceError:
        return
    assert PLAIN_DECIMAL.fullmatch(text), text
    assert type(micro) is int and 0 < micro <= 10_000 * MICRO
    assert Decimal(micro) == Decimal(text) * MICRO  # exact: nothing was rounded


@given(PRICE_LIKE)
@example("0.01")
@example("100")
@example("1.2345")
def test_any_string_parses_to_its_exact_multiplier_or_is_a_price_error(text: str) -> None:
    try:
        multiplier = parse_multiplier(text)
    except PriceError:
        return
    assert PLAIN_DECIMAL.fullmatch(text), text
    assert multiplier == Decimal(text)  # exact: nothing was rounded
    assert Decimal("0.01") <= multiplier <= 100


@given(PRICE_LIKE, PRICE_LIKE)
def test_any_pricing_object_of_strings_is_exact_positive_prices_or_a_400_naming_a_price(a: str, b: str) -> None:
    try:
        multiplier, price = parse_pricing({"input_usd_per_million": a, "output_usd_per_million": b})
    except InvalidListing as exc:
        assert exc.param in ("pricing.input_usd_per_million", "pricing.output_usd_per_million")
        return
    assert multiplier is None and price is not None
    assert Decimal(price.input_micro_per_million) == Decimal(a) * MICRO > 0
    assert Decimal(price.output_micro_per_million) == Decimal(b) * MICRO > 0
