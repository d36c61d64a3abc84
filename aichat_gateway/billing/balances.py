"""A buyer's balance as the API and the dashboard show it: settled-or-not balance, open holds, and
what is left to spend, read from the hot view in Redis (rebuilt from Postgres when absent)."""

from __future__ import annotations

from dataclasses import dataclass

from aichat_gateway.billing import ledger
from aichat_gateway.billing.services import BillingServices


@dataclass(frozen=True, slots=True)
class Balance:
    balance_micro: int
    held_micro: int
    available_micro: int


async def buyer_balance(svc: BillingServices, user_id: str) -> Balance:
    view = await svc.hot.view(user_id)
    if view is None:  # never loaded (or Redis lost it): Postgres is the truth, and the view is rebuilt
        async with svc.db.acquire() as conn:
            settled = await ledger.balance_micro(conn, ledger.AccountKind.BUYER, user_id)
        await svc.hot.load(user_id, settled)
        view = await svc.hot.view(user_id)
    assert view is not None
    return Balance(view.effective_micro, view.held_micro, view.available_micro)
