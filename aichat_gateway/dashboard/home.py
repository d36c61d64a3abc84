"""The console's overview (`/app`): the balance at a glance and where to go next."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aichat_gateway.billing.amounts import usd
from aichat_gateway.billing.balances import buyer_balance
from aichat_gateway.dashboard.pages import page_user
from aichat_gateway.dashboard.services import services
from aichat_gateway.dashboard.templating import Templates


class HomePages:
    def __init__(self, templates: Templates) -> None:
        self.templates = templates

    async def overview(self, request: Request) -> Response:
        user = await page_user(request)
        balance = await buyer_balance(services(request), user.id)
        context = {
            "balance_usd": usd(balance.balance_micro),
            "held_usd": usd(balance.held_micro),
            "available_usd": usd(balance.available_micro),
        }
        return self.templates.render(request, "home.html", context, user=user)

    def routes(self) -> list[Route]:
        return [Route("/app", self.overview, methods=["GET"])]
