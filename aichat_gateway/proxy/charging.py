"""Money on the hot path: size the hold, take it before the upstream call, price the answer.

The decisions are pure (`hold_amount`, `charge`); `take_hold` is the thin shell around the buyer's
hot view in Redis (`billing.holds.HotBalances`), and the settle is queued by `chat._finish` on the
same pipeline as the usage event, so a request costs two Redis round trips in all (DESIGN.md).

One hold per request, sized for the dearest listing the request may be tried on, so failover never
needs a second reservation; the charge is the price of the listing that served, never more than
the hold. The prompt's text is bounded by the body's size in bytes (a token is at least a byte of
text), which over-reserves about four times for English but costs no tokenizer pass; each image,
audio or file part adds the model's allowance for its kind (`config.catalog.PartAllowance`), since
its few bytes of URL or id may be billed as thousands of tokens; the whole prompt never exceeds
the model's context length. The answer is bounded by `max_tokens` times `n`, or the model's output
limit when `max_tokens` is absent.

A provider may still report more than was held (a catalog allowance too low, a provider counting
differently). The buyer pays at most the hold (the hold is the contract); the rest, `beyond_hold`,
is still paid to the seller, who was billed for it, and booked against the platform's own
exposure account by settlement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import asyncpg
from redis.exceptions import RedisError

from aichat_gateway.accounts.keys import KeyPrincipal
from aichat_gateway.billing import ledger
from aichat_gateway.billing.holds import HoldStatus, KeyCaps
from aichat_gateway.config.catalog import PartAllowance
from aichat_gateway.config.logging import get_logger
from aichat_gateway.config.money import usd
from aichat_gateway.marketplace.pricing import Price, cost_micro
from aichat_gateway.marketplace.snapshot import Route
from aichat_gateway.proxy.errors import InsufficientQuota, Unavailable

if TYPE_CHECKING:  # services.py imports this module
    from aichat_gateway.proxy.services import ProxyServices

log = get_logger(__name__)


# Content part types (OpenAI's chat parts, and the Responses-style names some SDKs send) whose
# billed tokens their bytes do not bound. "text" parts are bounded by their bytes; any other type
# is counted as a file, the largest allowance.
_PART_KINDS: Final[Mapping[str, str]] = {
    "image_url": "image",
    "input_image": "image",
    "image": "image",
    "input_audio": "audio",
    "audio": "audio",
    "file": "file",
    "input_file": "file",
}
_TEXT_PARTS: Final = frozenset({"text", "input_text", "refusal"})


def prompt_tokens_bound(messages: Sequence[Any], body_bytes: int, allowance: PartAllowance) -> int:
    """The most prompt tokens a chat request can be billed for (pure).

    Text is bounded by the body's bytes; each non-text part by the model's allowance for its kind;
    everything by the model's context length when the catalog knows it. `messages` are the
    request's, already checked to be objects (`inbound.parse_chat_request`).
    """
    extra = 0
    for message in messages:
        content = message.get("content")
        if type(content) is not list:  # a plain string, the usual case: its bytes bound it
            continue
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind in _TEXT_PARTS:
                continue
            extra += getattr(allowance, _PART_KINDS.get(kind, "file") if isinstance(kind, str) else "file")
    bound = body_bytes + extra
    ceiling = allowance.prompt_ceiling
    return bound if ceiling is None else min(bound, ceiling)


def hold_amount(routes: Sequence[Route], prompt_tokens_bound: int, answer_tokens_bound: int) -> int:
    """The worst case over every listing the request may be tried on (micro-USD)."""
    return max((cost_micro(r.price, prompt_tokens_bound, answer_tokens_bound) for r in routes), default=0)


def charge(price: Price, prompt_tokens: int, completion_tokens: int, held_micro: int) -> int:
    """What the buyer pays for an answer: its price, capped by the hold (the hold is the contract)."""
    return min(cost_micro(price, prompt_tokens, completion_tokens), held_micro)


def beyond_hold(price: Price, prompt_tokens: int, completion_tokens: int, held_micro: int) -> int:
    """What an answer costs beyond the hold: the seller is paid it, the platform bears it."""
    return max(cost_micro(price, prompt_tokens, completion_tokens) - held_micro, 0)


def refusal(status: HoldStatus, amount_micro: int, available_micro: int) -> InsufficientQuota:
    if status is HoldStatus.SHORT:
        return InsufficientQuota(
            f"Your balance is too low for this request: it may cost up to {usd(amount_micro)} USD and "
            f"{usd(max(available_micro, 0))} USD is available. Add funds, or lower max_tokens."
        )
    window = "daily" if status is HoldStatus.KEY_DAILY_CAP else "monthly"
    return InsufficientQuota(
        f"This API key's {window} spend cap would be exceeded: this request may cost up to "
        f"{usd(amount_micro)} USD. Raise the cap on /api/keys or wait for the next {window[:-2]}."
    )


async def take_hold(svc: ProxyServices, principal: KeyPrincipal, request_id: str, amount_micro: int) -> None:
    """Reserve the worst case against the buyer's available balance and the key's caps, or refuse."""
    caps = KeyCaps(principal.daily_cap_micro, principal.monthly_cap_micro)
    hot = svc.hot
    try:
        result = await hot.hold(
            buyer_id=principal.user_id,
            request_id=request_id,
            amount_micro=amount_micro,
            key_id=principal.key_id,
            ttl_s=svc.settings.hold_ttl_seconds,
            caps=caps,
        )
        if result.status is HoldStatus.COLD:  # not in Redis (new buyer, or Redis lost its data)
            await svc.recovery.ensure()
            await load_balance(svc, principal.user_id)
            result = await hot.hold(
                buyer_id=principal.user_id,
                request_id=request_id,
                amount_micro=amount_micro,
                key_id=principal.key_id,
                ttl_s=svc.settings.hold_ttl_seconds,
                caps=caps,
            )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        log.error("balance_not_loaded", error=repr(exc))
        raise Unavailable(
            "The gateway cannot load your balance right now; nothing was charged. Please retry shortly."
        ) from None
    except (RedisError, OSError) as exc:
        log.error("hold_failed", error=repr(exc))
        raise Unavailable(
            "The gateway cannot reach its balance store right now; nothing was charged. Please retry shortly."
        ) from None
    if result.status is not HoldStatus.OK:
        if result.status is HoldStatus.COLD:
            raise Unavailable("The gateway is rebuilding balances; nothing was charged. Please retry shortly.")
        raise refusal(result.status, amount_micro, result.available_micro)


async def load_balance(svc: ProxyServices, buyer_id: str) -> None:
    async with svc.db.acquire() as conn:
        balance = await ledger.balance_micro(conn, ledger.AccountKind.BUYER, buyer_id)
    await svc.hot.load(buyer_id, balance)
