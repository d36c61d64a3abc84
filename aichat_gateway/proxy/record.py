"""`RequestRecord`: what one `/v1` request learned on its way through the hot path; finishing the
request turns it into the usage event, the metrics and the breaker and capacity updates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aichat_gateway.accounts.keys import KeyPrincipal
from aichat_gateway.marketplace.capacity import Ticket
from aichat_gateway.marketplace.snapshot import Route as ListingRoute
from aichat_gateway.proxy.outcome import Outcome


@dataclass
class RequestRecord:
    """What one request learned on its way; becomes the usage event."""

    request_id: str
    started: float
    route: str
    principal: KeyPrincipal | None = None
    model: str = ""
    stream: bool = False
    listing: ListingRoute | None = None
    attempts: int = 0
    status: int = 500
    outcome: Outcome = Outcome.ERROR
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_source: str = "estimated"
    ttft_seconds: float | None = None
    handed_off: bool = False  # a response will finish this request after it is sent
    # (listing id, healthy, probe token) per listing tried: recorded on the breakers when finishing.
    health: list[tuple[str, bool, str | None]] = field(default_factory=list)
    # Capacity taken on limited listings; released (tokens corrected) when finishing.
    tickets: list[Ticket] = field(default_factory=list)
    # Worst-case tokens of this request (prompt + allowed answer), computed only if a listing has limits.
    estimate: Callable[[], int] | None = None
    # Money (micro-USD): the hold taken before the first upstream call (None: none was taken) and
    # what the answer costs, fixed once it is known (never more than the hold).
    held_micro: int | None = None
    cost_micro: int = 0
    # What the answer cost beyond the hold (the provider billed more than the worst case we sized):
    # paid to the seller by the platform, never charged to the buyer.
    beyond_hold_micro: int = 0
