"""Stripe webhook deliveries as Stripe signs them: shared by the webhook tests and the forgery attacks."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from aichat_gateway.billing.webhooks import sign

# Deliberately not shaped like a Stripe secret, so the log redactor cannot hide a leak from the test.
WEBHOOK_SECRET = "webhook-signing-" + uuid.uuid4().hex
START = 1_800_000_000.0  # when the events were created (and where the webhook tests' clock starts)


def signed(body: bytes, timestamp: float, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    ts = int(timestamp)
    return {"Stripe-Signature": f"t={ts},v1={sign(body, secret, ts)}", "Content-Type": "application/json"}


def event_body(event_type: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    event = {
        "id": event_id or f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": event_type,
        "created": int(START),
        "data": {"object": obj},
    }
    return orjson.dumps(event)
