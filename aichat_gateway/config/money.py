"""Micro-USD integers ⇄ the decimal USD strings of the REST API: the one shared implementation.

Inside, money is an integer count of micro-USD (1 USD = 1_000_000). Outside, it is a decimal
string in USD with at most six places ("12.345678"). It lives in `config` because every package
may import `config` and none may import each other's: billing, marketplace and accounts all show
and read amounts, and two copies of this would drift apart. Each package wraps `parse_usd_micro`'s
ValueError in its own error class; sign rules (positive, not zero) are the caller's, because a
top-up, an adjustment and a spend cap want different ones.
"""

from __future__ import annotations

import re

MICRO = 1_000_000
# Postgres bigint: anything larger could not be stored, so it is refused at the edge.
MAX_MICRO = 2**63 - 1
# Whole-USD digits beyond which an amount cannot fit in bigint micro-USD (9_223_372_036_854 USD).
_MAX_WHOLE_DIGITS = 13

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
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise ValueError(f"{name} is not a decimal number of USD")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > 6:
        raise ValueError(f"{name} has more than 6 decimal places")
    # Length guard before int(): a megabyte of digits should cost nothing to refuse.
    if len(whole.lstrip("0")) > _MAX_WHOLE_DIGITS:
        raise ValueError(f"{name} is out of range")
    magnitude = int(whole) * MICRO + int(frac.ljust(6, "0"))
    if magnitude > MAX_MICRO:
        raise ValueError(f"{name} is out of range")
    return -magnitude if text.startswith("-") else magnitude
