"""Stripe webhook signatures: HMAC-SHA256 over "t.body", any one v1 of several, a tolerance window.

The signatures are checked by the Stripe SDK; the header's grammar and the window (on the caller's
clock, both ways: NOW here is years before the wall clock) are ours."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import stripe

from aichat_gateway.billing.errors import WebhookRejected
from aichat_gateway.billing.webhooks import parse_event, parse_signature_header, sign, verify_signature

SECRET = "whsec_test_0123456789abcdef"
BODY = b'{"id":"evt_1","type":"payment_intent.succeeded","data":{"object":{"id":"pi_1"}}}'
NOW = 1_700_000_000
TOLERANCE = 300.0


def header(timestamp: int = NOW, *signatures: str) -> str:
    sigs = signatures or (sign(BODY, SECRET, timestamp),)
    return ",".join([f"t={timestamp}", *(f"v1={s}" for s in sigs)])


def verify(payload: bytes = BODY, value: str | None = None, *, now: float = NOW, secret: str = SECRET) -> int:
    return verify_signature(payload, header() if value is None else value, secret, now=now, tolerance=TOLERANCE)


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(BODY, SECRET, NOW) == expected


def test_a_valid_signature_returns_its_timestamp() -> None:
    assert verify() == NOW


def test_a_header_made_by_the_stripe_sdks_signer_verifies() -> None:
    value = stripe.WebhookSignature.generate_signature_header(BODY.decode(), SECRET, NOW)
    assert verify(value=value) == NOW


def test_a_body_that_is_not_utf8_is_rejected_even_with_its_hmac() -> None:
    """Stripe's bodies are UTF-8 JSON; the SDK verifies text."""
    body = b'{"id":"evt_1","name":"\xff"}'
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(body, header(NOW, sign(body, SECRET, NOW)))


def test_a_changed_body_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(BODY.replace(b"pi_1", b"pi_2"))


def test_a_changed_timestamp_is_rejected() -> None:
    signature = sign(BODY, SECRET, NOW)
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(value=f"t={NOW + 1},v1={signature}")


def test_a_changed_signature_is_rejected() -> None:
    signature = sign(BODY, SECRET, NOW)
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(value=header(NOW, flipped))


def test_a_signature_made_with_another_secret_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(value=header(NOW, sign(BODY, "whsec_other_secret_000000", NOW)))


def test_one_matching_v1_among_several_is_enough() -> None:
    wrong = sign(BODY, "whsec_rolled_out_secret_0000", NOW)
    assert verify(value=header(NOW, wrong, sign(BODY, SECRET, NOW))) == NOW


def test_several_v1s_none_matching_are_rejected() -> None:
    wrong = [sign(BODY, f"whsec_wrong_{i}_0000000000", NOW) for i in range(3)]
    with pytest.raises(WebhookRejected, match="does not match"):
        verify(value=header(NOW, *wrong))


def test_a_v0_signature_alone_is_not_accepted() -> None:
    with pytest.raises(WebhookRejected, match="no v1"):
        verify(value=f"t={NOW},v0={sign(BODY, SECRET, NOW)}")


def test_a_timestamp_older_than_the_tolerance_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="tolerance"):
        verify(now=NOW + TOLERANCE + 1)


def test_a_timestamp_further_ahead_than_the_tolerance_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="tolerance"):
        verify(now=NOW - TOLERANCE - 1)


def test_a_timestamp_at_the_edge_of_the_tolerance_is_accepted() -> None:
    assert verify(now=NOW + TOLERANCE) == NOW
    assert verify(now=NOW - TOLERANCE) == NOW


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"v1={'a' * 64}",  # no timestamp
        f"t={NOW}",  # no signature
        f"t=abc,v1={'a' * 64}",
        f"t=-5,v1={'a' * 64}",
        f"t={NOW},t={NOW},v1={'a' * 64}",
        f"t={NOW},v1=not-hex",
        f"t={NOW},v1={'a' * 63}",
        f"t=1{'0' * 20},v1={'a' * 64}",
        "t=" + "1" * 5000,
        f"t={NOW}," + ",".join(f"v1={'a' * 64}" for _ in range(17)),
    ],
)
def test_a_malformed_header_is_rejected(value: str | None) -> None:
    with pytest.raises(WebhookRejected):
        parse_signature_header(value)


def test_a_malformed_header_never_echoes_the_secret() -> None:
    with pytest.raises(WebhookRejected) as caught:
        verify(value="t=1,v1=zz")
    assert SECRET not in str(caught.value)


def test_a_verified_body_parses_into_id_type_and_object() -> None:
    event = parse_event(BODY)
    assert (event.id, event.type, dict(event.object)) == ("evt_1", "payment_intent.succeeded", {"id": "pi_1"})


@pytest.mark.parametrize(
    "payload", [b"not json", b"[]", b'{"type":"x","data":{"object":{}}}', b'{"id":"evt","data":{"object":{}}}']
)
def test_a_body_without_id_type_or_object_is_rejected(payload: bytes) -> None:
    with pytest.raises(WebhookRejected):
        parse_event(payload)
