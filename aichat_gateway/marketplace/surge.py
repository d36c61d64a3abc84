"""Utilisation-based surge pricing: a listing's price moves between a seller's floor and ceiling.

A seller who sets a floor and a ceiling sells spare capacity cheaply and charges more as the
listing fills up, which both earns more when demand is high and steers price-sensitive buyers to
idle listings (the router's `cheapest` sees the surged price). Pure integer/rational arithmetic:
no float ever touches money, so every process computes the same price for the same inputs.

    price = floor + round_half_up((ceiling - floor) * f(u))

    f(u) = 0                               for u ≤ knee          (default knee 1/2)
    f(u) = ((u - knee) / (1 - knee))**2      for knee < u ≤ 1

u is the utilisation in [0, 1] (values outside are clamped), given exactly: an `int`, a
`Fraction` (e.g. `utilisation_of(used, limit)`) or a `Decimal`; a `float` is refused. The curve is
flat while the listing has room (no reason to charge more), then rises gently and steepens near
full, when the last free capacity is worth most; it is continuous, reaches exactly the ceiling at
u = 1 and never leaves [floor, ceiling]. Each side (input, output) is surged on its own and
rounds half-up to a whole micro-USD per million tokens, like `pricing.multiplied`.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

from aichat_gateway.marketplace.pricing import Price, PriceError

DEFAULT_KNEE = Fraction(1, 2)
Utilisation = int | Fraction | Decimal


def utilisation_of(used: int, limit: int) -> Fraction:
    """Exact utilisation of a counter (requests in the window, tokens, open streams) against its limit."""
    if limit <= 0:
        raise PriceError("a capacity limit must be positive")
    return Fraction(max(used, 0), limit)


def surge_factor(utilisation: Utilisation, knee: Fraction = DEFAULT_KNEE) -> Fraction:
    """f(u) in [0, 1], exact: 0 up to the knee, then a quadratic up to 1 at full utilisation."""
    u = _exact(utilisation)
    if not 0 <= knee < 1:
        raise PriceError("the surge knee must be in [0, 1)")
    if u <= knee:
        return Fraction(0)
    if u >= 1:
        return Fraction(1)
    share = (u - knee) / (1 - knee)
    return share * share


def surge_price(floor: Price, ceiling: Price, utilisation: Utilisation, knee: Fraction = DEFAULT_KNEE) -> Price:
    """The price at this utilisation, each side between its floor and ceiling, rounded half-up."""
    if (
        floor.input_micro_per_million < 0
        or floor.output_micro_per_million < 0
        or ceiling.input_micro_per_million < floor.input_micro_per_million
        or ceiling.output_micro_per_million < floor.output_micro_per_million
    ):
        raise PriceError("a surge ceiling must be at least its floor, and the floor at least 0")
    factor = surge_factor(utilisation, knee)
    return Price(
        floor.input_micro_per_million
        + _round_half_up((ceiling.input_micro_per_million - floor.input_micro_per_million) * factor),
        floor.output_micro_per_million
        + _round_half_up((ceiling.output_micro_per_million - floor.output_micro_per_million) * factor),
    )


def _exact(value: Utilisation) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | Fraction | Decimal):
        raise PriceError("utilisation must be exact (int, Fraction or Decimal), never a float")
    if isinstance(value, Decimal) and not value.is_finite():
        raise PriceError("utilisation must be a finite number")
    return min(max(Fraction(value), Fraction(0)), Fraction(1))


def _round_half_up(value: Fraction) -> int:
    """Non-negative rational → nearest integer, halves up (2.5 → 3), as `pricing.multiplied` rounds."""
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)
