"""Auto-recharge's pure rules: when it charges, and what the page says after a refusal."""

from __future__ import annotations

from aichat_gateway.billing.autorecharge import Decision, Setting, decide, refused_reason

ON = Setting(enabled=True, threshold_micro=5_000_000, amount_micro=20_000_000)


def test_it_charges_when_available_falls_below_the_threshold() -> None:
    assert decide(ON, 4_999_999, open_auto_topup=False) is Decision.CHARGE


def test_at_the_threshold_there_is_enough() -> None:
    assert decide(ON, 5_000_000, open_auto_topup=False) is Decision.ENOUGH


def test_an_automatic_top_up_on_its_way_is_waited_for() -> None:
    assert decide(ON, 0, open_auto_topup=True) is Decision.WAIT


def test_off_or_never_set_charges_nothing() -> None:
    off = Setting(enabled=False, threshold_micro=5_000_000, amount_micro=20_000_000)
    assert decide(off, 0, open_auto_topup=False) is Decision.OFF
    assert decide(None, 0, open_auto_topup=False) is Decision.OFF


def test_a_refusal_names_the_amount_in_dollars_and_stripes_words() -> None:
    reason = refused_reason(20_000_000, "Your card was declined.")
    assert "$20.00" in reason and "Your card was declined." in reason and reason.startswith("Auto-recharge is off")
