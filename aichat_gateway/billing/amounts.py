"""Micro-USD integers at the billing API's edge: thin wrappers over config/money.py.

They keep billing's names and raise billing's InvalidBillingInput (naming the field), so the edge
answers 400 with `param`; the rules themselves live once, in config/money.py.
"""

from __future__ import annotations

from aichat_gateway.billing.errors import InvalidBillingInput
from aichat_gateway.config import money

MICRO = money.MICRO
MAX_MICRO = money.MAX_MICRO


def usd(micro: int) -> str:
    """Integer micro-USD → the API's decimal string: always six places ("12.345678", "-0.000001")."""
    return money.usd(micro)


def parse_usd(text: object, param: str = "amount_usd") -> int:
    """A decimal USD string → integer micro-USD, exactly (config.money's rules); refusals name `param`.

    Sign checks (positive, not zero) are the caller's: a top-up and an adjustment want different ones.
    """
    try:
        return money.parse_usd_micro(text, name=param)
    except ValueError as exc:
        raise InvalidBillingInput(str(exc), param=param) from None
