"""Fixtures of the attack suite: the root conftest's in-process app (`app`, `client`, `db`, with a
fresh database and Redis prefix per run), wrapped in a `Gateway` that signs people up and lists
endpoints over the public API. Shared helpers live in support.py (see there for why)."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from tests.security.support import Gateway


@pytest.fixture
def gateway(app: Starlette, client: httpx.AsyncClient) -> Gateway:
    """The provider-key check (tested with a real fake provider elsewhere) accepts every key here:
    these tests attack the gateway, not a provider."""

    async def accept(provider: str, base_url: str, api_key: str) -> None:
        return None

    app.state.key_checker = accept
    return Gateway(app, client)
