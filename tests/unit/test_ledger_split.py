"""Pure ledger decisions: the usage split, leg checks, and micro-USD strings at the edge."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aichat_gateway.billing.errors import InvalidBillingInput, LedgerError
from aichat_gateway.billing.ledger import check_legs, entries_after, parse_usd, split_charge, usd

ALMOST_ONE = Decimal("0.999999999999999999999999999999")


def test_a_zero_cost_splits_into_nothing() -> None:
    assert split_charge(0, Decimal("0.10")) == (0, 0)


def test_one_micro_usd_goes_to_the_seller_because_the_fee_rounds_down() -> None:
    assert split_charge(1, Decimal("0.10")) == (1, 0)


def test_a_zero_fee_rate_gives_the_seller_everything() -> None:
    assert split_charge(1_234_567, Decimal(0)) == (1_234_567, 0)


def test_a_fee_rate_just_below_one_leaves_the_seller_one_micro_usd() -> None:
    assert split_charge(1_000_000, ALMOST_ONE) == (1, 999_999)


def test_huge_amounts_split_exactly_beyond_decimal_context_precision() -> None:
    # 10**15 * 0.999...(30 nines) has more digits than Decimal's default 28-digit context keeps.
    assert split_charge(10**15, ALMOST_ONE) == (1, 10**15 - 1)
    assert split_charge(10**15, Decimal("0.1")) == (9 * 10**14, 10**14)


def test_the_fee_is_the_floor_of_cost_times_rate() -> None:
    assert split_charge(19, Decimal("0.10")) == (18, 1)
    assert split_charge(1_000, Decimal("0.125")) == (875, 125)


@given(
    cost=st.integers(min_value=0, max_value=10**15),
    rate=st.decimals(min_value=0, max_value=1, allow_nan=False, allow_infinity=False, places=8),
)
def test_the_parts_are_never_negative_and_always_sum_to_the_cost(cost: int, rate: Decimal) -> None:
    seller, platform = split_charge(cost, rate)
    assert seller >= 0 and platform >= 0
    assert seller + platform == cost
    assert platform <= cost * rate < platform + 1


@pytest.mark.parametrize("cost", [-1, True, 1.5])
def test_a_cost_that_is_not_a_non_negative_integer_is_refused(cost: object) -> None:
    with pytest.raises(LedgerError):
        split_charge(cost, Decimal("0.1"))  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [Decimal(-1), Decimal("1.01"), Decimal("NaN"), Decimal("Infinity"), 0.1])
def test_a_fee_rate_outside_zero_to_one_is_refused(rate: object) -> None:
    with pytest.raises(LedgerError):
        split_charge(100, rate)  # type: ignore[arg-type]


def test_legs_summing_to_zero_pass_the_check() -> None:
    assert check_legs([(1, -10), (2, 9), (3, 1)]) is None  # no LedgerError


@pytest.mark.parametrize(
    "legs",
    [[], [(1, 5)], [(1, 5), (2, -4)], [(1, 0), (2, 0)], [(1, 1.0), (2, -1)], [(1, -(2**63)), (2, 2**63)]],
    ids=["none", "one", "non-zero sum", "zero amounts", "a float", "beyond bigint"],
)
def test_legs_breaking_a_rule_are_refused(legs: list[tuple[int, int]]) -> None:
    with pytest.raises(LedgerError):
        check_legs(legs)


def test_balances_after_follow_the_legs_in_order() -> None:
    after, final = entries_after([(1, 5), (2, -5), (1, -2), (2, 2)], {1: 10, 2: 0})
    assert after == [15, -5, 13, -3]
    assert final == {1: 13, 2: -3}


@pytest.mark.parametrize(
    ("micro", "text"),
    [(0, "0.000000"), (1, "0.000001"), (-1, "-0.000001"), (12_345_678, "12.345678"), (-5_000_000, "-5.000000")],
)
def test_micro_usd_formats_with_six_places(micro: int, text: str) -> None:
    assert usd(micro) == text


@pytest.mark.parametrize(
    ("text", "micro"),
    [("12.345678", 12_345_678), ("5", 5_000_000), ("0.1", 100_000), ("-0.000001", -1), ("007.50", 7_500_000)],
)
def test_decimal_strings_parse_to_exact_micro_usd(text: str, micro: int) -> None:
    assert parse_usd(text) == micro


@given(st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1))
def test_formatting_then_parsing_gives_back_the_same_amount(micro: int) -> None:
    assert parse_usd(usd(micro)) == micro


@pytest.mark.parametrize(
    "text",
    ["1.0000001", "abc", "", "NaN", "inf", "-Infinity", "1e3", " 1", "1,5", ".5", "+1", "1.", "9223372036855"],
    ids=lambda t: repr(t),
)
def test_text_that_is_not_an_exact_amount_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(InvalidBillingInput) as caught:
        parse_usd(text, "amount_usd")
    assert caught.value.param == "amount_usd"


@pytest.mark.parametrize("value", [1.5, 2, None])
def test_a_non_string_amount_is_refused(value: object) -> None:
    with pytest.raises(InvalidBillingInput):
        parse_usd(value)


def test_a_megabyte_of_digits_is_refused_as_out_of_range() -> None:
    with pytest.raises(InvalidBillingInput, match="range"):
        parse_usd("9" * 1_000_000)
