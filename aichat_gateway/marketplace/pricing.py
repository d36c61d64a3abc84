"""Pricing: pure functions over integers (micro-USD per million tokens).

A listing is priced either by a multiplier over the catalog's list price or by explicit prices.
Prices and multipliers are read with config.money's one strict decimal grammar (no exponents,
underscores, spaces, non-ASCII digits, NaN or infinity; never rounded: too many places is a
refusal) and must be more than zero. Rounding: a multiplied price rounds half-up to a whole
micro-USD per million tokens; a request's cost rounds *up* to a whole micro-USD, so no served
request is ever free. `quote` gives the range a request can cost before it is sent; `surge`
moves a price between a floor and a ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

# `usd` (micro-USD → the API's decimal string) is config.money's, re-exported for marketplace callers.
from aichat_gateway.config.money import MICRO, parse_fixed_point, parse_usd_micro
from aichat_gateway.config.money import usd as usd

MAX_USD_PER_MILLION = 10_000
_MAX_MICRO_PER_MILLION = MAX_USD_PER_MILLION * MICRO
_MULTIPLIER_PLACES = 4
_MULTIPLIER_RANGE = (100, 100 * 10**_MULTIPLIER_PLACES)  # 0.01 to 100, in units of 0.0001


@dataclass(frozen=True, slots=True)
class Price:
    input_micro_per_million: int
    output_micro_per_million: int


class PriceError(ValueError):
    """A price or multiplier string is not acceptable; the message says why."""


def _micro(text: object, field: str) -> int:
    if not isinstance(text, str):
        raise PriceError(f'{field} must be a decimal string such as "0.15"')
    try:
        return parse_usd_micro(text, name=field)
    except ValueError as exc:
        raise PriceError(str(exc)) from None


def parse_price(text: object, field: str) -> int:
    """A listing's price: a decimal USD string per million tokens → integer micro-USD, more than
    zero (a free listing would serve every request for nothing) and at most 10,000."""
    micro = _micro(text, field)
    if not 0 < micro <= _MAX_MICRO_PER_MILLION:
        raise PriceError(f"{field} must be more than 0 and at most {MAX_USD_PER_MILLION}")
    return micro


def parse_usd(text: object, field: str) -> int:
    """A price *cap* (a buyer's max_price): like `parse_price`, but zero is a valid cap."""
    micro = _micro(text, field)
    if not 0 <= micro <= _MAX_MICRO_PER_MILLION:
        raise PriceError(f"{field} must be between 0 and {MAX_USD_PER_MILLION}")
    return micro


def parse_multiplier(text: object) -> Decimal:
    """A listing's multiplier over the catalog price: 0.01 to 100, at most four decimal places."""
    if not isinstance(text, str):
        raise PriceError('pricing.multiplier must be a decimal string such as "0.8"')
    try:
        units = parse_fixed_point(text, places=_MULTIPLIER_PLACES, name="pricing.multiplier")
    except ValueError as exc:
        raise PriceError(str(exc)) from None
    low, high = _MULTIPLIER_RANGE
    if not low <= units <= high:
        raise PriceError("pricing.multiplier must be between 0.01 and 100")
    return Decimal(units).scaleb(-_MULTIPLIER_PLACES)


def multiplied(list_price: Price, multiplier: Decimal) -> Price:
    def apply(micro: int) -> int:
        return int((Decimal(micro) * multiplier).to_integral_value(rounding=ROUND_HALF_UP))

    return Price(apply(list_price.input_micro_per_million), apply(list_price.output_micro_per_million))


def cost_micro(price: Price, prompt_tokens: int, completion_tokens: int) -> int:
    """The cost of one request in micro-USD, rounded up."""
    numerator = price.input_micro_per_million * prompt_tokens + price.output_micro_per_million * completion_tokens
    return -(-numerator // MICRO)


@dataclass(frozen=True, slots=True)
class Quote:
    """What one request can cost at one price, in micro-USD.

    `low`: the prompt alone (the answer may be empty); `high`: the prompt plus every one of
    `max_tokens` — the worst case, which is what a hold reserves before the request is sent.
    """

    low_micro: int
    high_micro: int


def quote(price: Price, prompt_tokens: int, max_tokens: int) -> Quote:
    """The cost range of a request of `prompt_tokens` allowed `max_tokens` of answer; exact integers."""
    for name, count in (("prompt_tokens", prompt_tokens), ("max_tokens", max_tokens)):
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise PriceError(f"{name} must be a non-negative integer")
    return Quote(cost_micro(price, prompt_tokens, 0), cost_micro(price, prompt_tokens, max_tokens))
