"""Forged Stripe webhooks: a bad signature, a replayed delivery past the tolerance window, and other
tricks on the Stripe-Signature header are 400 and move no money.

tests/integration/test_stripe_webhooks.py covers the happy paths with localstripe; here Stripe is
never reached (STRIPE_API_BASE is a closed port), because nothing forged may get that far. The
events name a real pending top-up, so a credit would have somewhere to go.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from aichat_gateway.billing import ledger
from aichat_gateway.billing.webhooks import sign
from aichat_gateway.config.settings import Settings
from tests.support.attack import Clock, Counted, Gateway, assert_error
from tests.support.webhooks import event_body, signed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

SECRET = "whsec-attack-suite-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "stripe_webhook_secret": SecretStr(SECRET),
            "stripe_secret_key": SecretStr("sk_test_" + uuid.uuid4().hex),
            "stripe_api_base": "http://127.0.0.1:9",
        }
    )


async def pending_topup(gateway: Gateway) -> tuple[str, dict[str, Any]]:
    """A buyer with a pending top-up; the `payment_intent.succeeded` object Stripe would send for it."""
    buyer = await gateway.user("stripe-victim")
    topup_id, intent_id = str(uuid.uuid4()), "pi_" + uuid.uuid4().hex[:24]
    await gateway.app.state.services.db.execute(
        "INSERT INTO topups (id, user_id, amount_micro, payment_intent_id, status) VALUES ($1, $2, $3, $4, 'pending')",
        uuid.UUID(topup_id),
        uuid.UUID(buyer.id),
        20_000_000,
        intent_id,
    )
    obj = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": 20_000_000_00,
        "amount_received": 20_000_000_00,
        "status": "succeeded",
        "metadata": {"account_id": buyer.id, "topup_id": topup_id},
    }
    return buyer.id, obj


async def assert_nothing_credited(gateway: Gateway, user_id: str, intent_id: str) -> None:
    db = gateway.app.state.services.db
    async with db.acquire() as conn:
        assert await ledger.balance_micro(conn, ledger.AccountKind.BUYER, user_id) == 0
    assert await db.fetchval("SELECT status FROM topups WHERE payment_intent_id = $1", intent_id) == "pending"
    assert (
        await db.fetchval("SELECT count(*) FROM transfers WHERE idempotency_key LIKE '%' || $1 || '%'", intent_id) == 0
    )
    assert (
        await db.fetchval("SELECT count(*) FROM stripe_events WHERE topup_id IS NOT NULL AND type LIKE 'payment%'") == 0
    )


async def post(gateway: Gateway, body: bytes, headers: dict[str, str] | list[tuple[bytes, bytes]]) -> Any:
    return await gateway.client.post("/api/webhooks/stripe", content=body, headers=headers)


async def test_a_success_event_signed_with_another_secret_is_400_and_credits_nothing(
    gateway: Gateway, clock: Clock
) -> None:
    user_id, obj = await pending_topup(gateway)
    body = event_body("payment_intent.succeeded", obj)
    for secret in ("whsec-guessed", "", SECRET.upper(), SECRET + " "):
        assert_error(await post(gateway, body, signed(body, clock(), secret)), 400)
    await assert_nothing_credited(gateway, user_id, obj["id"])


async def test_a_success_event_without_a_usable_signature_is_400_and_credits_nothing(
    gateway: Gateway, clock: Clock
) -> None:
    user_id, obj = await pending_topup(gateway)
    body = event_body("payment_intent.succeeded", obj)
    now = int(clock())
    good = sign(body, SECRET, now)
    for header in (
        None,
        "",
        f"t={now}",
        f"v1={good}",
        f"t={now},v0={good}",  # test-mode scheme: not an HMAC we check
        f"t={now + 1},v1={good}",  # the signature of another timestamp
        f"t={now},v1={good.upper()}",
        f"t={now},v1={good[:-1]}",
        f"t={now},t={now},v1={good}",
        f"t=-{now},v1={good}",
        f"t={now}.0,v1={good}",
        f"t=١٢٣,v1={good}",
        "t=" + "9" * 40 + f",v1={good}",
        f"t={now}," + ",".join(["v1=" + "0" * 64] * 200) + f",v1={good}",
        "x" * 100_000,
    ):
        headers = [(b"content-type", b"application/json")]
        if header is not None:
            headers.append((b"stripe-signature", header.encode()))  # raw octets, non-ASCII included
        assert_error(await post(gateway, body, headers), 400)
    await assert_nothing_credited(gateway, user_id, obj["id"])


async def test_a_body_changed_after_signing_is_400_and_credits_nothing(gateway: Gateway, clock: Clock) -> None:
    user_id, obj = await pending_topup(gateway)
    body = event_body("payment_intent.succeeded", obj)
    headers = signed(body, clock())
    for tampered in (
        body.replace(b"succeeded", b"succeeded "),
        body + b" ",
        b" " + body,
        body.replace(user_id.encode(), str(uuid.uuid4()).encode()),
    ):
        assert_error(await post(gateway, tampered, headers), 400)
    await assert_nothing_credited(gateway, user_id, obj["id"])


@pytest.mark.parametrize("age", [301, 3600, 86_400 * 365, -301, -86_400])
async def test_a_correctly_signed_event_outside_the_tolerance_window_is_400(
    gateway: Gateway, clock: Clock, age: int
) -> None:
    user_id, obj = await pending_topup(gateway)
    body = event_body("payment_intent.succeeded", obj)
    assert_error(await post(gateway, body, signed(body, clock() - age, SECRET)), 400)
    await assert_nothing_credited(gateway, user_id, obj["id"])


async def test_a_replay_of_a_valid_delivery_is_refused_once_its_timestamp_is_stale(
    gateway: Gateway, clock: Clock
) -> None:
    body = event_body("customer.updated", {"id": "cus_" + uuid.uuid4().hex[:14], "object": "customer"})
    delivery = signed(body, clock(), SECRET)
    first = await post(gateway, body, delivery)
    assert first.status_code == 200, first.text
    again = await post(gateway, body, delivery)
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    clock.offset = gateway.app.state.settings.stripe_webhook_tolerance + 1
    try:
        assert_error(await post(gateway, body, delivery), 400)
    finally:
        clock.offset = 0.0


async def test_a_forged_event_leaves_no_trace_in_the_event_log(gateway: Gateway, clock: Clock) -> None:
    """A refused delivery is not recorded: the genuine one, when it comes, is not taken for a duplicate."""
    _, obj = await pending_topup(gateway)
    event_id = "evt_" + uuid.uuid4().hex[:16]
    body = event_body("payment_intent.succeeded", obj, event_id)
    assert_error(await post(gateway, body, signed(body, clock(), "whsec-guessed")), 400)
    assert (
        await gateway.app.state.services.db.fetchval("SELECT count(*) FROM stripe_events WHERE event_id = $1", event_id)
        == 0
    )


async def test_an_oversized_event_is_refused_without_being_read_to_the_end(gateway: Gateway, clock: Clock) -> None:
    body = Counted(b" " * 65536, 64)  # 4 MiB, undeclared (chunked); Stripe's events are far smaller
    headers = {"Stripe-Signature": f"t={int(clock())},v1={'0' * 64}", "Content-Type": "application/json"}
    answer = await gateway.client.post("/api/webhooks/stripe", content=body.stream(), headers=headers)
    assert_error(answer, 400)
    assert body.pulled < body.chunks
