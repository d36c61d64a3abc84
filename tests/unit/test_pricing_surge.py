"""`marketplace/surge.py`: the utilisation curve and surge prices between a floor and a ceiling.

Exact rational arithmetic only: floats are refused as input, every price is an `int`.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aichat_gateway.marketplace.pricing import Price, PriceError
from aichat_gateway.marketplace.surge import DEFAULT_KNEE, surge_factor, surge_price, utilisation_of

FLOOR, CEILING = Price(100_000, 400_000), Price(300_000, 1_200_000)
UTILISATION = st.fractions(min_value=-1, max_value=2, max_denominator=10_000)

# ---- the curve ----------------------------------------------------------------------------------


@pytest.mark.parametrize("u", [Fraction(0), Fraction(1, 4), DEFAULT_KNEE])
def test_the_factor_is_zero_up_to_the_knee(u: Fraction) -> None:
    assert surge_factor(u) == 0


def test_the_factor_is_one_at_full_utilisation() -> None:
    assert surge_factor(1) == 1


def test_the_factor_rises_quadratically_past_the_knee() -> None:
    assert surge_factor(Fraction(3, 4)) == Fraction(1, 4)  # ((0.75 - 0.5) / 0.5) ** 2


def test_utilisation_outside_the_unit_interval_is_clamped() -> None:
    assert (surge_factor(-3), surge_factor(Fraction(7, 2))) == (Fraction(0), Fraction(1))


def test_a_knee_of_zero_surges_from_the_first_request() -> None:
    assert surge_factor(Fraction(1, 2), knee=Fraction(0)) == Fraction(1, 4)


@pytest.mark.parametrize("knee", [Fraction(1), Fraction(-1, 10), Fraction(3, 2)])
def test_a_knee_outside_zero_to_one_is_refused(knee: Fraction) -> None:
    with pytest.raises(PriceError):
        surge_factor(Fraction(1, 2), knee=knee)


def test_a_decimal_utilisation_is_exact() -> None:
    assert surge_factor(Decimal("0.75")) == Fraction(1, 4)


@pytest.mark.parametrize("u", [0.75, True, "0.75", Decimal("NaN"), Decimal("Infinity")])
def test_a_float_or_non_number_utilisation_is_refused(u: object) -> None:
    with pytest.raises(PriceError):
        surge_factor(u)  # type: ignore[arg-type]


@given(UTILISATION, UTILISATION)
def test_the_factor_never_falls_as_utilisation_rises(a: Fraction, b: Fraction) -> None:
    low, high = sorted((a, b))
    assert 0 <= surge_factor(low) <= surge_factor(high) <= 1


# ---- prices -------------------------------------------------------------------------------------


def test_an_idle_listing_sells_at_its_floor() -> None:
    assert surge_price(FLOOR, CEILING, 0) == FLOOR


def test_a_full_listing_sells_at_its_ceiling() -> None:
    assert surge_price(FLOOR, CEILING, 1) == CEILING


def test_past_the_knee_the_price_moves_by_the_factor_of_the_spread() -> None:
    assert surge_price(FLOOR, CEILING, Fraction(3, 4)) == Price(150_000, 600_000)


def test_a_half_micro_usd_rounds_up() -> None:
    # spread 2 (input) and 6 (output) at factor 1/4: 0.5 -> 1 and 1.5 -> 2
    assert surge_price(Price(10, 10), Price(12, 16), Fraction(3, 4)) == Price(11, 12)


def test_just_under_half_a_micro_usd_rounds_down() -> None:
    # spread 1 at factor ((0.749 - 0.5) / 0.5) ** 2 = 0.248004: 0.248 -> 0
    assert surge_price(Price(0, 0), Price(1, 1), Fraction(749, 1000)) == Price(0, 0)


def test_equal_floor_and_ceiling_give_a_fixed_price() -> None:
    assert surge_price(FLOOR, FLOOR, Fraction(9, 10)) == FLOOR


def test_zero_floor_and_ceiling_stay_free() -> None:
    assert surge_price(Price(0, 0), Price(0, 0), 1) == Price(0, 0)


def test_huge_prices_surge_exactly() -> None:
    huge = 10**30
    price = surge_price(Price(huge, huge), Price(3 * huge, 3 * huge), Fraction(3, 4))
    assert price == Price(huge + huge // 2, huge + huge // 2)
    assert isinstance(price.input_micro_per_million, int)


@pytest.mark.parametrize(
    "floor, ceiling", [(Price(10, 10), Price(9, 20)), (Price(10, 10), Price(20, 9)), (Price(-1, 0), Price(5, 5))]
)
def test_a_ceiling_below_its_floor_or_a_negative_floor_is_refused(floor: Price, ceiling: Price) -> None:
    with pytest.raises(PriceError):
        surge_price(floor, ceiling, Fraction(1, 2))


@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    UTILISATION,
)
def test_a_surge_price_stays_between_floor_and_ceiling(a: int, b: int, c: int, d: int, u: Fraction) -> None:
    floor, ceiling = Price(min(a, b), min(c, d)), Price(max(a, b), max(c, d))
    price = surge_price(floor, ceiling, u)
    assert floor.input_micro_per_million <= price.input_micro_per_million <= ceiling.input_micro_per_million
    assert floor.output_micro_per_million <= price.output_micro_per_million <= ceiling.output_micro_per_million
    assert type(price.input_micro_per_million) is int and type(price.output_micro_per_million) is int


# ---- utilisation_of -----------------------------------------------------------------------------


def test_utilisation_of_a_counter_is_an_exact_fraction() -> None:
    assert utilisation_of(3, 4) == Fraction(3, 4)


def test_a_negative_count_is_no_utilisation() -> None:
    assert utilisation_of(-2, 4) == 0


@pytest.mark.parametrize("limit", [0, -5])
def test_a_limit_that_is_not_positive_is_refused(limit: int) -> None:
    with pytest.raises(PriceError):
        utilisation_of(1, limit)
