"""config/money.py: the one crossing between integer micro-USD and the API's decimal strings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aichat_gateway.billing import amounts
from aichat_gateway.config.money import MAX_MICRO, MICRO, parse_usd_micro, usd
from aichat_gateway.marketplace import pricing


def test_one_usd_is_a_million_micro_usd() -> None:
    assert MICRO == 1_000_000


@pytest.mark.parametrize(
    ("micro", "text"),
    [
        (0, "0.000000"),
        (1, "0.000001"),
        (-1, "-0.000001"),
        (12_500_000, "12.500000"),
        (MAX_MICRO, "9223372036854.775807"),
    ],
)
def test_an_amount_is_shown_with_exactly_six_decimal_places(micro: int, text: str) -> None:
    assert usd(micro) == text


@pytest.mark.parametrize(
    ("text", "micro"),
    [("12.50", 12_500_000), ("5", 5_000_000), ("0.000001", 1), ("-0.000001", -1), ("007.5", 7_500_000)],
)
def test_a_decimal_string_parses_to_exact_micro_usd(text: str, micro: int) -> None:
    assert parse_usd_micro(text) == micro


@given(st.integers(min_value=-MAX_MICRO, max_value=MAX_MICRO))
def test_showing_then_parsing_gives_back_the_same_amount(micro: int) -> None:
    assert parse_usd_micro(usd(micro)) == micro


@pytest.mark.parametrize("value", [1.5, 2, None, True, ["1"], {"usd": "1"}], ids=repr)
def test_anything_but_a_string_is_refused_with_an_example_of_what_is_wanted(value: object) -> None:
    with pytest.raises(ValueError, match=r'must be a decimal string such as "12\.50"'):
        parse_usd_micro(value)


@pytest.mark.parametrize(
    "text", ["", "abc", "NaN", "nan", "inf", "-Infinity", "1e3", "1E3", " 1", "1 ", "1,5", ".5", "1.", "+1", "--1"]
)
def test_text_that_is_not_plain_decimal_notation_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a decimal number"):
        parse_usd_micro(text)


def test_more_than_six_decimal_places_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 6 decimal places"):
        parse_usd_micro("1.0000001")


@pytest.mark.parametrize("text", ["9223372036854.775808", "9223372036855", "-9223372036855", "9" * 1_000_000])
def test_an_amount_beyond_postgres_bigint_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="out of range"):
        parse_usd_micro(text)


def test_the_largest_bigint_amount_is_accepted() -> None:
    assert parse_usd_micro("9223372036854.775807") == MAX_MICRO


def test_a_refusal_names_the_field_it_was_given() -> None:
    with pytest.raises(ValueError, match=r"^daily_spend_cap_usd has more than 6"):
        parse_usd_micro("0.1234567", name="daily_spend_cap_usd")


@given(st.integers())
def test_billing_and_marketplace_show_amounts_exactly_as_config_money_does(micro: int) -> None:
    assert amounts.usd(micro) == pricing.usd(micro) == usd(micro)
