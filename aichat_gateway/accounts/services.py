"""What the accounts package needs from the running app, and the typed way its handlers reach it.

The composition root (`aichat_gateway.server`) builds one frozen services object per app and
checks, through mypy, that it offers everything declared here; accounts never imports it.
"""

from __future__ import annotations

from typing import Protocol, cast

from starlette.requests import HTTPConnection

from aichat_gateway.accounts.keycache import KeyCache
from aichat_gateway.accounts.keysettings import RoutingValidator
from aichat_gateway.accounts.sessioncache import SessionCache
from aichat_gateway.coreservices import CoreServices


class AccountsServices(CoreServices, Protocol):
    @property
    def keys(self) -> KeyCache: ...
    @property
    def sessions(self) -> SessionCache: ...
    # A key's routing defaults are read as a request's `provider` object: the marketplace's parser,
    # handed in by the composition root (accounts must not import marketplace).
    @property
    def validate_key_routing(self) -> RoutingValidator: ...


def services(conn: HTTPConnection) -> AccountsServices:
    """The services of the app serving this request (the /api sub-app shares the root's state)."""
    return cast(AccountsServices, conn.app.state.services)
