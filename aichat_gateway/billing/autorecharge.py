"""Auto-recharge: top a buyer up by N from their default saved card when what they have available
falls below M. Off by default (migration 0013); a charge that fails turns it off with the reason,
which the billing page shows.

A periodic job (billing/jobs.py, every minute) runs `AutoRecharge.run_once`: for each buyer who
turned it on, the decision (`decide`, pure) reads the balance and whether an automatic top-up of
theirs is still on its way, so one low balance never starts two charges. The charge is an ordinary
top-up row (`auto`) and PaymentIntent, confirmed off-session on the saved card; like every top-up
it is credited only by Stripe's verified webhook, and a failure the webhook reports later turns
auto-recharge off too (webhooks.py calls `turn_off`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from aichat_gateway.apibody import Answer, Body, Usd, UsdAmount
from aichat_gateway.apiroute import ApiRoute, Auth, api_route
from aichat_gateway.billing import ledger
from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.api import read_body
from aichat_gateway.billing.errors import InvalidBillingInput
from aichat_gateway.billing.savedcards import existing_customer
from aichat_gateway.billing.services import services
from aichat_gateway.billing.stripe_client import CardRefused, StripeClient
from aichat_gateway.billing.stripe_effects import CURRENCY, MICRO_PER_CENT
from aichat_gateway.billing.topups import TopupLimits, session_buyer, topup_amount
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.settings import Settings

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Setting:
    enabled: bool
    threshold_micro: int
    amount_micro: int
    disabled_reason: str | None = None


class Decision(StrEnum):
    CHARGE = "charge"
    WAIT = "wait"  # an automatic top-up is on its way
    ENOUGH = "enough"
    OFF = "off"


def decide(setting: Setting | None, available_micro: int, open_auto_topup: bool) -> Decision:
    """Pure: charge when it is on, nothing is on its way, and what is available is below M."""
    if setting is None or not setting.enabled:
        return Decision.OFF
    if open_auto_topup:
        return Decision.WAIT
    return Decision.CHARGE if available_micro < setting.threshold_micro else Decision.ENOUGH


def check_setting(threshold_micro: int, amount_micro: int, limits: TopupLimits) -> None:
    """The amount follows the top-up rules (whole cents, within the limits); M is positive."""
    if threshold_micro <= 0:
        raise InvalidBillingInput("threshold_usd must be more than 0", param="threshold_usd")
    topup_amount(amount_micro, limits)  # refuses naming amount_usd, the form's field too


async def get_setting(db: asyncpg.Pool, user_id: str) -> Setting | None:
    row = await db.fetchrow(
        "SELECT enabled, threshold_micro, amount_micro, disabled_reason FROM auto_recharge WHERE user_id = $1",
        uuid.UUID(user_id),
    )
    if row is None:
        return None
    return Setting(row["enabled"], row["threshold_micro"], row["amount_micro"], row["disabled_reason"])


async def save_setting(db: asyncpg.Pool, user_id: str, setting: Setting) -> None:
    await db.execute(
        """INSERT INTO auto_recharge (user_id, enabled, threshold_micro, amount_micro, disabled_reason)
           VALUES ($1, $2, $3, $4, NULL)
           ON CONFLICT (user_id) DO UPDATE SET enabled = EXCLUDED.enabled, threshold_micro = EXCLUDED.threshold_micro,
               amount_micro = EXCLUDED.amount_micro, disabled_reason = NULL, updated_at = now()""",
        uuid.UUID(user_id),
        setting.enabled,
        setting.threshold_micro,
        setting.amount_micro,
    )


async def turn_off(db: ledger.Conn | asyncpg.Pool, user_id: str, reason: str) -> None:
    await db.execute(
        "UPDATE auto_recharge SET enabled = false, disabled_reason = $2, updated_at = now() WHERE user_id = $1",
        uuid.UUID(user_id),
        reason,
    )


class AutoRecharge:
    def __init__(self, db: asyncpg.Pool, stripe: StripeClient) -> None:
        self._db = db
        self._stripe = stripe

    async def run_once(self) -> int:
        """Charge every buyer who needs it now; returns how many charges were started."""
        users = await self._db.fetch("SELECT user_id FROM auto_recharge WHERE enabled")
        started = 0
        for row in users:
            started += await self.check(str(row["user_id"]))
        return started

    async def check(self, user_id: str) -> int:
        setting = await get_setting(self._db, user_id)
        async with self._db.acquire() as conn:
            # Settled balance minus nothing held: holds live in Redis and are short; a buyer mid-request
            # is charged at most one interval later.
            available = await ledger.balance_micro(conn, ledger.AccountKind.BUYER, user_id)
        open_auto = await self._db.fetchval(
            "SELECT 1 FROM topups WHERE user_id = $1 AND auto AND status IN ('creating', 'pending')",
            uuid.UUID(user_id),
        )
        if decide(setting, available, bool(open_auto)) is not Decision.CHARGE:
            return 0
        assert setting is not None
        await self._charge(user_id, setting)
        return 1

    async def _charge(self, user_id: str, setting: Setting) -> None:
        customer = await existing_customer(self._db, user_id)
        card = await self._stripe.default_card(customer) if customer else None
        if customer is None or card is None:
            await turn_off(self._db, user_id, "Auto-recharge is off: there is no saved card to charge.")
            return
        topup_id = str(uuid.uuid4())
        await self._db.execute(
            "INSERT INTO topups (id, user_id, amount_micro, status, auto) VALUES ($1, $2, $3, 'creating', true)",
            topup_id,
            user_id,
            setting.amount_micro,
        )
        charged = await self._stripe.charge_saved_card(
            amount_cents=setting.amount_micro // MICRO_PER_CENT,
            currency=CURRENCY,
            customer=customer,
            payment_method=card,
            metadata={"account_id": user_id, "topup_id": topup_id, "auto": "1"},
            idempotency_key=f"topup-{topup_id}",
        )
        if isinstance(charged, CardRefused):
            await self._db.execute("UPDATE topups SET status = 'failed', updated_at = now() WHERE id = $1", topup_id)
            await turn_off(self._db, user_id, refused_reason(setting.amount_micro, charged.message))
            log.info("auto_recharge_refused", topup_id=topup_id)
            return
        await self._db.execute(
            "UPDATE topups SET payment_intent_id = $2, status = 'pending', updated_at = now() "
            "WHERE id = $1 AND status = 'creating'",
            topup_id,
            charged.id,
        )
        log.info("auto_recharge_charged", topup_id=topup_id, payment_intent_id=charged.id)


def refused_reason(amount_micro: int, message: str) -> str:
    """Pure: what the billing page says after a failed automatic top-up."""
    cents = amount_micro // MICRO_PER_CENT
    return (
        f"Auto-recharge is off: the automatic top-up of ${cents // 100}.{cents % 100:02d} failed ({message}). "
        "Check your card and turn it on again."
    )


# --- HTTP -------------------------------------------------------------------------------------


class AutoRechargeRequest(Body):
    enabled: bool
    threshold_usd: UsdAmount
    amount_usd: UsdAmount


class AutoRechargeShown(Answer):
    enabled: bool
    threshold_usd: Usd | None
    amount_usd: Usd | None
    disabled_reason: str | None


def setting_json(setting: Setting | None) -> dict[str, object]:
    if setting is None:
        return {"enabled": False, "threshold_usd": None, "amount_usd": None, "disabled_reason": None}
    return {
        "enabled": setting.enabled,
        "threshold_usd": usd(setting.threshold_micro),
        "amount_usd": usd(setting.amount_micro),
        "disabled_reason": setting.disabled_reason,
    }


async def update_setting(db: asyncpg.Pool, settings: Settings, user_id: str, body: AutoRechargeRequest) -> Setting:
    """The API's and the page's one way to change it (the same rules, the same words)."""
    check_setting(body.threshold_usd, body.amount_usd, TopupLimits.from_settings(settings))
    setting = Setting(body.enabled, body.threshold_usd, body.amount_usd)
    await save_setting(db, user_id, setting)
    return setting


async def get_auto_recharge(request: Request) -> Response:
    user_id = session_buyer(request)
    return JSONResponse(setting_json(await get_setting(services(request).db, user_id)))


async def put_auto_recharge(request: Request) -> Response:
    user_id = session_buyer(request)
    svc = services(request)
    body = await read_body(request, AutoRechargeRequest)
    return JSONResponse(setting_json(await update_setting(svc.db, svc.settings, user_id, body)))


def routes() -> list[ApiRoute]:
    return [
        api_route(
            "GET",
            "/billing/auto_recharge",
            get_auto_recharge,
            operation_id="getAutoRecharge",
            summary="The caller's auto-recharge (off by default)",
            tag="billing",
            answers={200: AutoRechargeShown},
            auth=Auth.SESSION,
        ),
        api_route(
            "PUT",
            "/billing/auto_recharge",
            put_auto_recharge,
            operation_id="setAutoRecharge",
            summary="Top up by amount_usd from the default saved card when available falls below threshold_usd",
            tag="billing",
            body=AutoRechargeRequest,
            answers={200: AutoRechargeShown},
            auth=Auth.SESSION,
        ),
    ]
