"""Pure Stripe decisions: what a PaymentIntent, refund or dispute does to a top-up, in any order;
and the client's pure parts (the amount received, parsing Stripe's objects)."""

from __future__ import annotations

import pytest

from aichat_gateway.billing.errors import PaymentsUnavailable
from aichat_gateway.billing.stripe_client import amount_received, parse_charge, parse_payment_intent
from aichat_gateway.billing.stripe_effects import (
    DisputeState,
    IntentFacts,
    Outcome,
    TopupState,
    decide_dispute_closed,
    decide_dispute_created,
    decide_intent,
    decide_refund,
)
from aichat_gateway.billing.webhooks import intent_belongs

PENDING = TopupState("t1", "u1", "pending", 0, 0)
CREDITED = TopupState("t1", "u1", "succeeded", 20_000_000, 0)
SUCCEEDED = IntentFacts("succeeded", 2000, "usd")


def test_a_succeeded_intent_credits_what_stripe_received_in_micro_usd() -> None:
    decision = decide_intent(PENDING, SUCCEEDED, failure_event=False)
    assert (decision.outcome, decision.status, decision.credit_micro) == (Outcome.CREDITED, "succeeded", 20_000_000)


def test_a_succeeded_intent_already_credited_credits_nothing() -> None:
    decision = decide_intent(CREDITED, SUCCEEDED, failure_event=False)
    assert (decision.outcome, decision.credit_micro) == (Outcome.ALREADY_CREDITED, 0)


def test_a_failure_event_marks_a_pending_topup_failed() -> None:
    decision = decide_intent(PENDING, IntentFacts("requires_payment_method", 0, "usd"), failure_event=True)
    assert (decision.outcome, decision.status, decision.credit_micro) == (Outcome.FAILED, "failed", 0)


def test_a_failure_event_arriving_after_success_changes_nothing() -> None:
    decision = decide_intent(CREDITED, SUCCEEDED, failure_event=True)
    assert (decision.outcome, decision.status, decision.credit_micro) == (Outcome.ALREADY_CREDITED, None, 0)


def test_a_failed_topup_whose_intent_then_succeeds_is_credited() -> None:
    failed = TopupState("t1", "u1", "failed", 0, 0)
    assert decide_intent(failed, SUCCEEDED, failure_event=False).credit_micro == 20_000_000


def test_a_processing_intent_changes_nothing() -> None:
    decision = decide_intent(PENDING, IntentFacts("processing", 0, "usd"), failure_event=False)
    assert (decision.outcome, decision.status) == (Outcome.NO_EFFECT, None)


def test_an_intent_in_another_currency_is_ignored() -> None:
    decision = decide_intent(PENDING, IntentFacts("succeeded", 2000, "eur"), failure_event=False)
    assert (decision.outcome, decision.credit_micro) == (Outcome.IGNORED_CURRENCY, 0)


def test_a_refund_debits_the_cumulative_amount_beyond_what_was_debited() -> None:
    partly = TopupState("t1", "u1", "succeeded", 20_000_000, 5_000_000)
    decision = decide_refund(partly, 1200, "usd")
    assert (decision.outcome, decision.debit_micro, decision.refunded_micro) == (
        Outcome.REFUNDED,
        7_000_000,
        12_000_000,
    )


def test_an_older_smaller_refund_total_debits_nothing() -> None:
    refunded = TopupState("t1", "u1", "succeeded", 20_000_000, 12_000_000)
    assert decide_refund(refunded, 500, "usd").debit_micro == 0


def test_the_same_refund_total_twice_debits_nothing_the_second_time() -> None:
    refunded = TopupState("t1", "u1", "succeeded", 20_000_000, 12_000_000)
    assert decide_refund(refunded, 1200, "usd").outcome is Outcome.NO_EFFECT


def test_a_dispute_created_debits_its_amount() -> None:
    decision = decide_dispute_created(None, 5_000_000, "needs_response", "usd")
    assert (decision.outcome, decision.debit_micro) == (Outcome.DISPUTED, 5_000_000)
    assert decision.state == DisputeState("open", True, 5_000_000)


def test_an_inquiry_withdraws_nothing() -> None:
    decision = decide_dispute_created(None, 5_000_000, "warning_needs_response", "usd")
    assert (decision.debit_micro, decision.state) == (0, DisputeState("open", False, 5_000_000))


def test_a_replayed_dispute_created_debits_nothing() -> None:
    existing = DisputeState("open", True, 5_000_000)
    assert decide_dispute_created(existing, 5_000_000, "needs_response", "usd").debit_micro == 0


def test_a_dispute_won_gives_back_what_was_debited() -> None:
    decision = decide_dispute_closed(DisputeState("open", True, 5_000_000), 5_000_000, "won", "usd")
    assert (decision.outcome, decision.debit_micro) == (Outcome.DISPUTE_WON, -5_000_000)
    assert decision.state == DisputeState("won", False, 5_000_000)


def test_a_dispute_won_before_it_was_created_moves_nothing_now_or_later() -> None:
    closed = decide_dispute_closed(None, 5_000_000, "won", "usd")
    assert (closed.debit_micro, closed.state) == (0, DisputeState("won", False, 5_000_000))
    assert decide_dispute_created(closed.state, 5_000_000, "needs_response", "usd").debit_micro == 0


def test_a_dispute_lost_keeps_the_debit() -> None:
    decision = decide_dispute_closed(DisputeState("open", True, 5_000_000), 5_000_000, "lost", "usd")
    assert (decision.debit_micro, decision.state) == (0, DisputeState("lost", True, 5_000_000))


def test_a_dispute_lost_before_it_was_created_debits_once() -> None:
    closed = decide_dispute_closed(None, 5_000_000, "lost", "usd")
    assert (closed.outcome, closed.debit_micro) == (Outcome.DISPUTED, 5_000_000)
    assert decide_dispute_created(closed.state, 5_000_000, "needs_response", "usd").debit_micro == 0


def test_a_replayed_dispute_won_gives_back_nothing() -> None:
    won = DisputeState("won", False, 5_000_000)
    assert decide_dispute_closed(won, 5_000_000, "won", "usd").debit_micro == 0


def test_amount_received_is_stripes_field_when_present() -> None:
    assert (
        amount_received({"amount_received": 1500, "charges": {"data": [{"status": "succeeded", "amount": 9}]}}) == 1500
    )


def test_amount_received_falls_back_to_succeeded_captured_charges() -> None:
    charges = [
        {"status": "succeeded", "amount": 2000, "captured": True},
        {"status": "failed", "amount": 2000},
        {"status": "succeeded", "amount": 700, "captured": False},
    ]
    assert amount_received({"charges": {"data": charges}}) == 2000


def test_amount_received_reads_an_expanded_latest_charge() -> None:
    assert amount_received({"latest_charge": {"status": "succeeded", "amount": 300}}) == 300


def test_a_payment_intent_in_an_unexpected_shape_is_payments_unavailable() -> None:
    with pytest.raises(PaymentsUnavailable):
        parse_payment_intent({"id": "pi_1"})


def test_a_charge_names_its_payment_intent_even_when_expanded() -> None:
    charge = parse_charge(
        {"id": "ch_1", "status": "succeeded", "amount": 2000, "currency": "USD", "payment_intent": {"id": "pi_1"}}
    )
    assert (charge.payment_intent, charge.currency, charge.amount_refunded) == ("pi_1", "usd", 0)


def test_an_intent_belongs_to_the_row_that_stored_its_id() -> None:
    assert intent_belongs("pi_1", "t1", "pi_1", {"topup_id": "t1"})
    assert not intent_belongs("pi_1", "t1", "pi_2", {"topup_id": "t1"})
    assert not intent_belongs("pi_1", "t1", "pi_1", {"topup_id": "t2"})


def test_an_intent_belongs_to_a_row_without_an_id_only_through_its_metadata() -> None:
    assert intent_belongs(None, "t1", "pi_1", {"topup_id": "t1"})
    assert not intent_belongs(None, "t1", "pi_1", {})
