"""The pure side of buyer holds: windows, keys, script arguments, the refusal rule, reply parsing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from aichat_gateway.billing.errors import LedgerError
from aichat_gateway.billing.holdplan import (
    DAY_MS,
    GRACE_MS,
    NO_CAP,
    HoldFigures,
    HoldResult,
    HoldStatus,
    HotView,
    KeyCaps,
    Repair,
    Swept,
    buyer_keys,
    buyer_tag,
    by_buyer,
    holders_key,
    parse_hold,
    parse_reconcile,
    parse_settle,
    parse_sweep,
    parse_view,
    plan_applied,
    plan_hold,
    plan_load,
    plan_reconcile,
    plan_renew,
    plan_settle,
    plan_sweep,
    refusal,
    spend_windows,
    ttl_ms,
    view_key,
)

BUYER = "0b5e4f4e-7f3c-4d7e-9a43-5a8c1d2e3f40"


def ms(text: str) -> int:
    """'2024-02-29T23:59:59.999' (UTC) as unix milliseconds."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def figures(
    balance: int = 1000, unsettled: int = 0, held: int = 0, day: int = 0, month: int = 0, key_held: int = 0
) -> HoldFigures:
    return HoldFigures(balance, unsettled, held, day, month, key_held)


# ---- windows -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "day", "month", "day_end", "month_end"),
    [
        ("2024-05-01T00:00:00", "20240501", "202405", "2024-05-02T00:00:00", "2024-06-01T00:00:00"),
        ("2024-05-31T23:59:59.999", "20240531", "202405", "2024-06-01T00:00:00", "2024-06-01T00:00:00"),
        ("2024-06-01T00:00:00", "20240601", "202406", "2024-06-02T00:00:00", "2024-07-01T00:00:00"),
        ("2024-02-29T12:00:00", "20240229", "202402", "2024-03-01T00:00:00", "2024-03-01T00:00:00"),
        ("2023-02-28T23:59:59.999", "20230228", "202302", "2023-03-01T00:00:00", "2023-03-01T00:00:00"),
        ("2024-12-31T23:59:59.999", "20241231", "202412", "2025-01-01T00:00:00", "2025-01-01T00:00:00"),
        ("2025-01-01T00:00:00", "20250101", "202501", "2025-01-02T00:00:00", "2025-02-01T00:00:00"),
    ],
)
def test_spend_windows_are_utc_calendar_days_and_months(
    moment: str, day: str, month: str, day_end: str, month_end: str
) -> None:
    w = spend_windows(ms(moment))
    assert (w.day, w.month, w.day_end_ms, w.month_end_ms) == (day, month, ms(day_end), ms(month_end))


@given(st.integers(min_value=0, max_value=ms("2200-01-01T00:00:00")))
def test_every_moment_is_inside_its_spend_windows(now_ms: int) -> None:
    w = spend_windows(now_ms)
    assert 0 < w.day_end_ms - now_ms <= DAY_MS
    assert 0 < w.month_end_ms - now_ms <= 31 * DAY_MS
    assert spend_windows(w.day_end_ms - 1).day == w.day != spend_windows(w.day_end_ms).day
    assert spend_windows(w.month_end_ms - 1).month == w.month != spend_windows(w.month_end_ms).month


# ---- keys --------------------------------------------------------------------------------------


def test_every_key_of_a_buyer_shares_one_hash_slot_in_every_window() -> None:
    now, later = (
        buyer_keys("aichat", BUYER, spend_windows(0)),
        buyer_keys("aichat", BUYER, spend_windows(ms("2031-07-09T03:00:00"))),
    )
    keys = [*now.all(), *later.all(), view_key("aichat", BUYER)]
    assert len({key_slot(k.encode()) for k in keys}) == 1
    assert all(k.startswith(f"{{aichat:b:{BUYER}}}:") for k in keys)


def test_the_day_and_month_spend_keys_name_their_window() -> None:
    k = buyer_keys("p", "B", spend_windows(ms("2024-05-31T23:59:59")))
    assert (k.spend_day, k.spend_month) == ("{p:b:B}:spend:d:20240531", "{p:b:B}:spend:m:202405")


def test_different_buyers_usually_land_in_different_slots() -> None:
    slots = {key_slot(view_key("p", f"buyer-{i}").encode()) for i in range(50)}
    assert len(slots) > 40


def test_the_holders_index_is_outside_every_buyers_tag() -> None:
    assert holders_key("p") == "p:holders"
    assert not holders_key("p").startswith("{")


@pytest.mark.parametrize(("prefix", "buyer"), [("p", "a{b"), ("p", "a}b"), ("p{", "x"), ("p}", "x")])
def test_braces_that_would_break_the_hash_tag_are_refused(prefix: str, buyer: str) -> None:
    with pytest.raises(LedgerError):
        buyer_tag(prefix, buyer)


# ---- the refusal rule --------------------------------------------------------------------------


def test_nothing_refuses_within_the_balance_and_every_cap() -> None:
    assert refusal(figures(1000, 100, 200, 50, 500, 30), 600, KeyCaps(700, 1200)) is None


def test_a_hold_of_exactly_the_available_amount_is_allowed() -> None:
    assert refusal(figures(1000, 100, 200), 700, KeyCaps()) is None


def test_a_hold_one_micro_above_the_available_amount_is_short() -> None:
    assert refusal(figures(1000, 100, 200), 701, KeyCaps()) is HoldStatus.SHORT


def test_a_negative_balance_refuses_even_a_free_request() -> None:
    assert refusal(figures(balance=-1), 0, KeyCaps()) is HoldStatus.SHORT


def test_a_daily_cap_counts_settled_spend_and_open_holds_of_the_key() -> None:
    seen = figures(day=300, month=300, key_held=200)
    assert refusal(seen, 500, KeyCaps(daily_micro=1000)) is None
    assert refusal(seen, 501, KeyCaps(daily_micro=1000)) is HoldStatus.KEY_DAILY_CAP


def test_a_monthly_cap_counts_settled_spend_and_open_holds_of_the_key() -> None:
    seen = figures(day=0, month=800, key_held=100)
    assert refusal(seen, 100, KeyCaps(monthly_micro=1000)) is None
    assert refusal(seen, 101, KeyCaps(monthly_micro=1000)) is HoldStatus.KEY_MONTHLY_CAP


def test_a_short_balance_is_reported_before_any_cap() -> None:
    assert refusal(figures(balance=10, day=10, month=10), 11, KeyCaps(0, 0)) is HoldStatus.SHORT


def test_of_both_caps_the_monthly_one_is_reported() -> None:
    assert refusal(figures(day=10, month=10), 1, KeyCaps(10, 10)) is HoldStatus.KEY_MONTHLY_CAP


def test_a_cap_of_zero_admits_only_free_requests() -> None:
    assert refusal(figures(), 0, KeyCaps(0, 0)) is None
    assert refusal(figures(), 1, KeyCaps(daily_micro=0)) is HoldStatus.KEY_DAILY_CAP


@given(
    balance=st.integers(min_value=-(10**9), max_value=10**9),
    unsettled=st.integers(min_value=0, max_value=10**9),
    held=st.integers(min_value=0, max_value=10**9),
    amount=st.integers(min_value=0, max_value=10**9),
)
def test_without_caps_a_hold_is_short_exactly_when_it_exceeds_what_is_available(
    balance: int, unsettled: int, held: int, amount: int
) -> None:
    short = refusal(figures(balance, unsettled, held), amount, KeyCaps()) is HoldStatus.SHORT
    assert short == (amount > balance - unsettled - held)


# ---- the hold plan -----------------------------------------------------------------------------

NOW = ms("2024-05-31T23:59:30")


def test_a_hold_plan_names_its_keys_and_arguments_in_the_scripts_order() -> None:
    plan = plan_hold("p", "B", "req-1", 2500, "key-7", NOW, 90_000, KeyCaps(daily_micro=10_000))
    assert plan.keys == (
        "{p:b:B}:view",
        "{p:b:B}:deadlines",
        "{p:b:B}:holds",
        "{p:b:B}:keyheld",
        "{p:b:B}:spend:d:20240531",
        "{p:b:B}:spend:m:202405",
    )
    assert plan.args == (NOW, NOW + 90_000, "req-1", 2500, "key-7", 10_000, NO_CAP)
    assert (plan.deadline_ms, plan.amount_micro, plan.caps) == (NOW + 90_000, 2500, KeyCaps(daily_micro=10_000))


def test_a_hold_without_caps_passes_no_cap_for_both() -> None:
    assert plan_hold("p", "B", "r", 1, "k", NOW, 1000).args[-2:] == (NO_CAP, NO_CAP)


@pytest.mark.parametrize("amount", [-1, True, 1.5])
def test_a_hold_amount_that_is_not_a_non_negative_integer_is_a_bug(amount: object) -> None:
    with pytest.raises(LedgerError):
        plan_hold("p", "B", "r", amount, "k", NOW, 1000)  # type: ignore[arg-type]


def test_a_negative_cap_is_a_bug() -> None:
    with pytest.raises(LedgerError):
        plan_hold("p", "B", "r", 1, "k", NOW, 1000, KeyCaps(monthly_micro=-5))


def test_a_ttl_is_whole_milliseconds_and_never_zero() -> None:
    assert ttl_ms(90.0) == 90_000
    assert ttl_ms(0.0015) == 1
    with pytest.raises(LedgerError):
        ttl_ms(0.0004)


# ---- parsing the hold reply --------------------------------------------------------------------


def test_a_cold_reply_asks_the_caller_to_load() -> None:
    assert parse_hold([-1, 0, 0, 0, 0, 0, 0], plan_hold("p", "B", "r", 300, "k", NOW, 1)) == HoldResult(
        HoldStatus.COLD, 0
    )


def test_a_taken_hold_reports_what_is_available_after_it() -> None:
    p = plan_hold("p", "B", "r", 300, "k", NOW, 1)
    assert parse_hold([1, 1000, 100, 200, 0, 0, 0], p) == HoldResult(HoldStatus.OK, 400)


def test_an_already_open_hold_is_ok_and_reports_what_is_available_now() -> None:
    p = plan_hold("p", "B", "r", 300, "k", NOW, 1)
    assert parse_hold([b"2", b"1000", b"0", b"300", b"0", b"0", b"300"], p) == HoldResult(HoldStatus.OK, 700)


def test_a_refused_hold_names_the_rule_and_what_is_available_now() -> None:
    p = plan_hold("p", "B", "r", 300, "k", NOW, 1, KeyCaps(daily_micro=500))
    assert parse_hold([0, 1000, 0, 0, 250, 250, 0], p) == HoldResult(HoldStatus.KEY_DAILY_CAP, 1000)
    short = plan_hold("p", "B", "r", 300, "k", NOW, 1)
    assert parse_hold([0, 299, 0, 0, 0, 0, 0], short) == HoldResult(HoldStatus.SHORT, 299)


def test_a_refusal_the_python_rule_cannot_explain_is_loud() -> None:
    with pytest.raises(RuntimeError):
        parse_hold([0, 1000, 0, 0, 0, 0, 0], plan_hold("p", "B", "r", 300, "k", NOW, 1))


def test_an_admission_the_python_rule_would_refuse_is_loud() -> None:
    with pytest.raises(RuntimeError):
        parse_hold([1, 100, 0, 0, 0, 0, 0], plan_hold("p", "B", "r", 300, "k", NOW, 1))


def test_a_result_is_ok_only_when_its_status_is() -> None:
    assert HoldResult(HoldStatus.OK, 0).ok
    assert not HoldResult(HoldStatus.SHORT, 0).ok


# ---- settle, renew, sweep ----------------------------------------------------------------------


def test_a_settle_plan_charges_the_keys_spend_in_the_windows_of_the_settle() -> None:
    keys, args = plan_settle("p", "B", "req-1", 120, NOW)
    assert keys == (
        "{p:b:B}:view",
        "{p:b:B}:deadlines",
        "{p:b:B}:holds",
        "{p:b:B}:keyheld",
        "{p:b:B}:unsettled",
        "{p:b:B}:spend:d:20240531",
        "{p:b:B}:spend:m:202405",
    )
    assert args == ("req-1", 120, 30_000 + GRACE_MS, 30_000 + GRACE_MS, -1)


def test_a_settle_plan_may_allow_a_late_charge_up_to_what_was_held() -> None:
    _, args = plan_settle("p", "B", "req-1", 120, NOW, late_cap_micro=500)
    assert args[-1] == 500


def test_a_settle_just_after_midnight_counts_for_the_new_day_and_month() -> None:
    keys, args = plan_settle("p", "B", "r", 1, ms("2024-06-01T00:00:00"))
    assert keys[-2:] == ("{p:b:B}:spend:d:20240601", "{p:b:B}:spend:m:202406")
    assert args[2:4] == (DAY_MS + GRACE_MS, 30 * DAY_MS + GRACE_MS)


def test_a_negative_cost_is_a_bug() -> None:
    with pytest.raises(LedgerError):
        plan_settle("p", "B", "r", -1, NOW)


@pytest.mark.parametrize(("raw", "charged"), [(-1, -1), (0, 0), (b"250", 250)])
def test_a_settle_reply_is_the_charge_or_minus_one(raw: object, charged: int) -> None:
    assert parse_settle(raw) == charged


def test_a_settle_reply_below_minus_one_is_loud() -> None:
    with pytest.raises(RuntimeError):
        parse_settle(-2)


def test_a_renew_plan_moves_the_deadline_to_now_plus_the_ttl() -> None:
    assert plan_renew("p", "B", "r", NOW, 60_000) == (("{p:b:B}:deadlines",), ("r", NOW + 60_000))


def test_a_sweep_plan_passes_now_and_its_reply_names_the_next_deadline() -> None:
    assert plan_sweep("p", "B", NOW) == (
        ("{p:b:B}:view", "{p:b:B}:deadlines", "{p:b:B}:holds", "{p:b:B}:keyheld"),
        (NOW,),
    )
    assert parse_sweep([2, b"1717199999000"]) == Swept(2, 1_717_199_999_000)
    assert parse_sweep([0, -1]) == Swept(0, None)


# ---- load, applied, reconcile, view ------------------------------------------------------------


def test_load_and_applied_touch_only_the_view_and_their_records() -> None:
    assert plan_load("p", "B", -50) == (("{p:b:B}:view", "{p:b:B}:holds", "{p:b:B}:unsettled"), (-50,))
    assert plan_applied("p", "B", ["r1", "r2"]) == (("{p:b:B}:view", "{p:b:B}:unsettled"), ("r1", "r2"))


def test_applied_pairs_are_grouped_by_buyer_once_each_in_first_seen_order() -> None:
    pairs = [("b1", "r1"), ("b2", "r9"), ("b1", "r2"), ("b1", "r1"), ("b2", "r9")]
    assert by_buyer(pairs) == {"b1": ["r1", "r2"], "b2": ["r9"]}
    assert list(by_buyer(pairs)) == ["b1", "b2"]
    assert by_buyer([]) == {}


def test_a_reconcile_plan_passes_now_and_the_postgres_balance() -> None:
    keys, args = plan_reconcile("p", "B", 7, NOW)
    assert keys == ("{p:b:B}:view", "{p:b:B}:deadlines", "{p:b:B}:holds", "{p:b:B}:keyheld", "{p:b:B}:unsettled")
    assert args == (NOW, 7)


def test_reconciling_a_view_that_is_not_loaded_repairs_nothing() -> None:
    assert parse_reconcile([0], "B") is None


def test_reconciling_a_clean_view_reports_nothing() -> None:
    assert parse_reconcile([1, 900, 50, 30, 900, 50, 30, 0], "B") is None


def test_reconciling_a_drifted_view_reports_old_and_new_of_what_changed() -> None:
    repair = parse_reconcile([1, 900, 50, 30, 880, 50, 0, 0], "B")
    assert repair == Repair("B", HotView(900, 50, 30), HotView(880, 50, 0), key_holds_fixed=False)
    assert repair.changes() == {"balance_micro": (900, 880), "held_micro": (30, 0)}


def test_rebuilt_key_holds_alone_are_a_repair() -> None:
    repair = parse_reconcile([1, 900, 0, 0, 900, 0, 0, 1], "B")
    assert repair is not None and repair.key_holds_fixed and repair.changes() == {}


def test_a_view_reads_none_when_cold_and_zero_for_missing_fields() -> None:
    assert parse_view([None, None, None]) is None
    assert parse_view([b"-20", None, b"5"]) == HotView(-20, 0, 5)


# ---- the view's arithmetic ---------------------------------------------------------------------


def test_the_effective_balance_counts_unsettled_spend_and_available_also_open_holds() -> None:
    view = HotView(balance_micro=1000, unsettled_micro=150, held_micro=300)
    assert (view.effective_micro, view.available_micro) == (850, 550)


def test_a_refunded_balance_below_zero_leaves_less_than_nothing_available() -> None:
    view = HotView(balance_micro=-200, unsettled_micro=0, held_micro=0)
    assert (view.effective_micro, view.available_micro) == (-200, -200)


def test_hold_figures_compute_available_like_the_view() -> None:
    assert figures(1000, 150, 300, 7, 8, 9).available_micro == 550
