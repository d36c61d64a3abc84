"""Schemathesis fuzzes every operation of /openapi.json against the in-process app: no 5xx, ever,
and every answer has a documented status, content type and shape.

The app is loaded with `schemathesis.openapi.from_asgi`, which also runs its lifespan in
schemathesis' own event-loop thread, so this module's tests are synchronous and do not use the
conftest's (module-loop) app. Every operation is called as an admin (admins pass every role check,
so the handlers behind them run too) with a modest number of positive and negative examples each.
Stripe is localstripe, so top-ups are created for real; the production URL rules apply (no private
upstreams) and listing keys are not checked with the provider (there is no internet here).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from aichat_gateway.accounts import sessions
from aichat_gateway.accounts.tokens import SessionTokens
from aichat_gateway.billing.audit import audit
from aichat_gateway.config.settings import Settings
from aichat_gateway.server.app import api_routes, create_app
from aichat_gateway.server.openapi import openapi_document
from tests.support.attack import Account, listing_body, unique_email
from tests.support.earnings import earn
from tests.support.localstripe import LocalStripe, running_localstripe
from tests.support.scratch import migrated_database
from tests.support.scratch import redis_prefix as scratch_redis_prefix
from tests.support.stripe_connect import fake_connect

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Examples per operation and generation mode (positive, negative); fewer where each costs an argon2 run.
EXAMPLES = {"*": 10, "register": 5, "login": 5, "changePassword": 5}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
STRIPE_KEY = "sk_test_" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def stripe(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    with running_localstripe(Path(tmp_path_factory.mktemp("fuzz-stripe")), STRIPE_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def fuzz_database() -> Iterator[str]:
    """A database of its own: fuzzing leaves listings and users that no other test should route to
    or count, and the ledger audit at the end covers exactly what the fuzzing did."""
    with migrated_database("fuzz") as dsn:
        yield dsn


@pytest.fixture(scope="module")
def fuzz_settings(settings: Settings, stripe: LocalStripe, fuzz_database: str) -> Iterator[Settings]:
    with scratch_redis_prefix("fz") as prefix:
        yield settings.model_copy(
            update={
                "database_url": fuzz_database,
                "redis_prefix": prefix,
                "allow_private_upstreams": False,
                "check_listing_keys": False,
                "stripe_secret_key": SecretStr(STRIPE_KEY),
                "stripe_webhook_secret": SecretStr("whsec-fuzz-" + uuid.uuid4().hex),
                "stripe_api_base": stripe.url,
                "log_level": "warning",
            }
        )


@pytest.fixture(scope="module", autouse=True)
def the_ledger_still_balances_afterwards(fuzz_database: str) -> Iterator[None]:
    yield

    async def breaches() -> list[str]:
        conn = await asyncpg.connect(fuzz_database)
        try:
            return [str(breach) for breach in await audit(conn)]
        finally:
            await conn.close()

    assert asyncio.run(breaches()) == []


@pytest.fixture(scope="module")
def api_schema(fuzz_settings: Settings) -> Iterator[OpenApiSchema]:
    app = create_app(fuzz_settings)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        asgi.shutdown_lifespans()  # the app's pools and background tasks, in schemathesis' loop


@pytest.fixture(scope="module")
def admin(fuzz_settings: Settings, api_schema: OpenApiSchema, password_hash: str) -> Account:
    """An admin stored directly, with the session token login would give."""
    email = unique_email("fuzz-admin")

    async def create() -> str:
        conn = await asyncpg.connect(fuzz_settings.database_url)
        try:
            query = "INSERT INTO users (email, password_hash, role) VALUES ($1, $2, 'admin') RETURNING id"
            return str(await conn.fetchval(query, email, password_hash))
        finally:
            await conn.close()

    admin_id = asyncio.run(create())
    return Account(admin_id, email, new_session(fuzz_settings, admin_id)[0], "admin")


def new_session(settings: Settings, user_id: str, role: str = "admin") -> tuple[str, str]:
    """A token with its server-side session row, as login makes them: (token, session id)."""
    issued = SessionTokens.from_settings(settings).issue(user_id, role)

    async def start() -> str:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await sessions.start(conn, issued.claims)
        finally:
            await conn.close()

    return issued.token, asyncio.run(start())


def other_user(settings: Settings) -> str:
    """A user with a session of their own: the admin's target when ending someone's sessions."""

    async def create() -> str:
        conn = await asyncpg.connect(settings.database_url)
        try:
            query = "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id"
            return str(await conn.fetchval(query, unique_email("fuzz-target")))
        finally:
            await conn.close()

    user_id = asyncio.run(create())
    new_session(settings, user_id, "user")
    return user_id


@pytest.fixture(scope="module")
def own_ids(api_schema: OpenApiSchema, admin: Account, fuzz_settings: Settings) -> dict[str, str]:
    """Real ids of the admin's own key, listing, top-up and payout, by path parameter name: fuzzed
    bodies on real objects reach the code behind the 404 that a random id gets."""
    with asgi.get_client(api_schema.app) as client:

        def created(path: str, body: dict[str, Any]) -> str:
            answer = client.post(path, json=body, headers=admin.auth)
            assert answer.status_code == 201, answer.text
            return str(answer.json()["id"])

        ids = {
            "key_id": created("/api/keys", {"name": "fuzzed"}),
            "listing_id": created("/api/marketplace/listings", listing_body(base_url="https://93.184.216.34/v1")),
            "topup_id": created("/api/billing/topups", {"amount_usd": "20.00"}),
        }

        async def earnings() -> None:
            conn = await asyncpg.connect(fuzz_settings.database_url)
            try:
                # Earned long enough ago to be past the holding period, so a payout can be requested.
                earned_at = datetime.now(UTC) - timedelta(days=10)
                await earn(conn, admin.id, 50_000_000, listing_id=ids["listing_id"], at=earned_at)
            finally:
                await conn.close()

        asyncio.run(earnings())
        ids["payout_id"] = created("/api/seller/payouts", {"amount_usd": "20.00"})
    # Another session of the admin (ending it leaves the one the fuzzing uses), and another user.
    ids["session_id"] = new_session(fuzz_settings, admin.id)[1]
    ids["user_id"] = other_user(fuzz_settings)
    # A card id Stripe never issued to this account: the card routes answer 404 for it.
    ids["card_id"] = "pm_fuzzed0000000000"
    return ids


def headers_for(operation_id: str, admin: Account, settings: Settings) -> dict[str, str]:
    """The admin's session; for logout, which ends the session it is sent with, a new one each time."""
    if operation_id != "logout":
        return admin.auth
    return {"Authorization": f"Bearer {new_session(settings, admin.id)[0]}"}


def operation_ids() -> list[str]:
    return [op["operationId"] for item in openapi_document(api_routes())["paths"].values() for op in item.values()]


@pytest.mark.parametrize("operation_id", operation_ids())
def test_every_operation_answers_without_a_5xx_and_as_documented(
    api_schema: OpenApiSchema,
    admin: Account,
    own_ids: dict[str, str],
    operation_id: str,
    fuzz_settings: Settings,
) -> None:
    operation = api_schema.find_operation_by_id(operation_id)
    names = [parameter.name for parameter in operation.path_parameters]
    rounds: list[dict[str, str] | None] = [None] + ([{name: own_ids[name] for name in names}] if names else [])
    fuzzable = bool(operation.body) or any(True for _ in operation.iter_parameters())
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if fuzzable else [])
    # localstripe has no Connect accounts or account links: that operation meets a fake of them.
    connect = fake_connect(fuzz_settings.stripe_api_base) if operation_id == "startPayoutOnboarding" else nullcontext()
    with connect:
        fuzz(operation, rounds, modes, operation_id, admin, fuzz_settings)
    # Ending sessions is fuzzed too: none of it may end the session the fuzzing runs on, or every
    # later operation would only meet the 401 (documented, so nothing else would notice).
    with asgi.get_client(api_schema.app) as client:
        assert client.get("/api/auth/me", headers=admin.auth).status_code == 200


def fuzz(
    operation: Any,
    rounds: list[dict[str, str] | None],
    modes: list[GenerationMode],
    operation_id: str,
    admin: Account,
    fuzz_settings: Settings,
) -> None:
    """The operation's examples in every round (with and without own path ids) and mode."""
    for path_parameters, mode in itertools.product(rounds, modes):

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        @settings(
            max_examples=EXAMPLES.get(operation_id, EXAMPLES["*"]),
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
        )
        def no_server_error(case: schemathesis.Case[Any]) -> None:
            response = case.call(headers=headers_for(operation_id, admin, fuzz_settings))
            case.validate_response(response, checks=CHECKS)

        no_server_error()
