"""Pricing: pure functions over integers (micro-USD per million tokens).

A listing is priced either by a multiplier over the catalog's list price or by explicit prices.
Rounding: a multiplied price rounds half-up to a whole micro-USD per million tokens; a request's
cost rounds *up* to a whole micro-USD, so no served request is ever free. `quote` gives the
range a request can cost before it is sent; `surge` moves a price between a floor and a ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

# `usd` (micro-USD → the API's decimal string) is config.money's, re-exported for marketplace callers;
# `parse_usd` below stays here: prices have their own rules (not negative, at most 10,000 per million).
from aichat_gateway.config.money import MICRO
from aichat_gateway.config.money import usd as usd

MAX_USD_PER_MILLION = Decimal(10_000)


@dataclass(frozen=True, slots=True)
class Price:
    input_micro_per_million: int
    output_micro_per_million: int


class PriceError(ValueError):
    """A price or multiplier string is not acceptable; the message says why."""


def parse_usd(text: object, field: str) -> int:
    """A decimal USD string (per million tokens) → integer micro-USD; refuses floats and excess precision."""
    if not isinstance(text, str):
        raise PriceError(f'{field} must be a decimal string such as "0.15"')
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise PriceError(f"{field} is not a decimal number") from None
    if not value.is_finite() or value < 0 or value > MAX_USD_PER_MILLION:
        raise PriceError(f"{field} must be between 0 and {MAX_USD_PER_MILLION}")
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise PriceError(f"{field} has more than 6 decimal places")
    return int(micro)


def parse_multiplier(text: object) -> Decimal:
    if not isinstance(text, str):
        raise PriceError('pricing.multiplier must be a decimal string such as "0.8"')
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise PriceError("pricing.multiplier is not a decimal number") from None
    if not value.is_finite() or not Decimal("0.01") <= value <= Decimal(100):
        raise PriceError("pricing.multiplier must be between 0.01 and 100")
    if value != value.quantize(Decimal("0.0001")):
        raise PriceError("pricing.multiplier has more than 4 decimal places")
    return value


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
