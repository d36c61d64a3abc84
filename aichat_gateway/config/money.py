"""Micro-USD integers ⇄ the decimal USD strings of the REST API: the one shared implementation.

Inside, money is an integer count of micro-USD (1 USD = 1_000_000). Outside, it is a decimal
string in USD with at most six places ("12.345678"). It lives in `config` because every package
may import `config` and none may import each other's: billing, marketplace and accounts all show
and read amounts, and two copies of this would drift apart. Each package wraps `parse_usd_micro`'s
ValueError in its own error class; sign rules (positive, not zero) are the caller's, because a
top-up, an adjustment and a spend cap want different ones. `parse_fixed_point` is the same
grammar for decimals with other scales (marketplace's price multipliers, four places).
"""

from __future__ import annotations

import re

MICRO = 1_000_000
# Postgres bigint: anything larger could not be stored, so it is refused at the edge.
_MAX_BIGINT = 2**63 - 1
MAX_MICRO = _MAX_BIGINT
# Digits of bigint's largest value: with 6 places, 13 whole-USD digits (9_223_372_036_854 USD).
_BIGINT_DIGITS = len(str(_MAX_BIGINT))

# Plain decimal notation only: no exponent ("1e3"), no sign but "-", no spaces, no "inf"/"nan",
# no bare ".5" or "1." — what a person or a JSON client writes for an amount of money.
_DECIMAL = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")


def usd(micro: int) -> str:
    """Integer micro-USD → the API's decimal string: always six places ("12.345678", "-0.000001")."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def parse_usd_micro(text: object, *, name: str = "amount") -> int:
    """A decimal USD string → integer micro-USD, exactly; ValueError (message naming `name`) otherwise.

    Refused: anything but a string (a JSON number would have gone through a float), non-numbers,
    NaN/infinity, exponents, more than six decimal places, and amounts outside bigint.
    """
    if not isinstance(text, str):
        raise ValueError(f'{name} must be a decimal string such as "12.50"')
    return parse_fixed_point(text, places=6, name=name, what="a decimal number of USD")


def parse_fixed_point(text: str, *, places: int, name: str, what: str = "a decimal number") -> int:
    """Plain decimal notation → the exact integer count of 10**-places units ("1.25", 4 → 12500).

    The one grammar for every decimal the API reads (amounts of money, prices, multipliers):
    ASCII digits only (`[0-9]` is not `\\d`, which would take Arabic-Indic or fullwidth digits),
    no exponent, underscore, space or sign but "-", no NaN/infinity; at most `places` decimal
    places (never rounded), and a result that fits Postgres' bigint. ValueError naming `name`.
    """
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise ValueError(f"{name} is not {what}")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > places:
        raise ValueError(f"{name} has more than {places} decimal places")
    # Length guard before int(): a megabyte of digits should cost nothing to refuse.
    if len(whole.lstrip("0")) > _BIGINT_DIGITS - places:
        raise ValueError(f"{name} is out of range")
    scale: int = 10**places  # annotated: int ** int is Any to mypy (a negative power is a float)
    magnitude = int(whole) * scale + int(frac.ljust(places, "0") or "0")
    if magnitude > _MAX_BIGINT:
        raise ValueError(f"{name} is out of range")
    return -magnitude if text.startswith("-") else magnitude
