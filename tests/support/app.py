"""Helpers for tests that drive an app built by `server.create_app`."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.applications import Starlette

from aichat_gateway.server.services import Services


def services_of(app: Starlette) -> Services:
    """The running app's services (its lifespan must have started)."""
    found: Services = app.state.services
    return found


def replace_services(app: Starlette, **changes: Any) -> Services:
    """Swap some of a running app's services (a fake key checker, a recording upstream…); returns
    the services as they were, to put back with `app.state.services = previous`."""
    previous = services_of(app)
    app.state.services = dataclasses.replace(previous, **changes)
    return previous
