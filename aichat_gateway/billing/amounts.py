"""Micro-USD integers at the API's edge: the decimal strings the REST API shows and accepts.

Inside, money is an integer count of micro-USD (1 USD = 1_000_000). Outside, it is a decimal
string in USD with at most six places ("12.345678"). These two functions are the only crossing.
billing keeps its own copy (marketplace/pricing.py has one for prices) because billing must not
import marketplace.
"""

from __future__ import annotations

import re

from aichat_gateway.billing.errors import InvalidBillingInput

MICRO = 1_000_000
# Postgres bigint: anything larger could not be stored, so it is refused at the edge.
MAX_MICRO = 2**63 - 1

# Plain decimal notation only: no exponent ("1e3"), no sign but "-", no spaces, no "inf"/"nan",
# no bare ".5" — what a person or a JSON client writes for an amount of money.
_DECIMAL = re.compile(r"-?([0-9]+)(?:\.([0-9]+))?")


def usd(micro: int) -> str:
    """Integer micro-USD → the API's decimal string: always six places ("12.345678", "-0.000001")."""
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole}.{frac:06d}"


def parse_usd(text: object, param: str = "amount_usd") -> int:
    """A decimal USD string → integer micro-USD, exactly; refuses what is not an exact amount.

    Refused (InvalidBillingInput naming `param`): anything but a string (a JSON number would have
    gone through a float), non-numbers, NaN/infinity, exponents, more than six decimal places, and
    amounts outside bigint. Sign checks (positive, not zero) are the caller's: a top-up and an
    adjustment want different ones.
    """
    if not isinstance(text, str):
        raise InvalidBillingInput(f'{param} must be a decimal string such as "12.50"', param=param)
    match = _DECIMAL.fullmatch(text)
    if match is None:
        raise InvalidBillingInput(f"{param} is not a decimal number of USD", param=param)
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > 6:
        raise InvalidBillingInput(f"{param} has more than 6 decimal places", param=param)
    # Length guard before int(): a megabyte of digits should cost nothing to refuse.
    if len(whole.lstrip("0")) > 13:
        raise InvalidBillingInput(f"{param} is out of range", param=param)
    magnitude = int(whole) * MICRO + int(frac.ljust(6, "0"))
    if magnitude > MAX_MICRO:
        raise InvalidBillingInput(f"{param} is out of range", param=param)
    return -magnitude if text.startswith("-") else magnitude
