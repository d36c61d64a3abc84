"""The pure side of capacity: windows, keys, which limit refuses, when it resets, what is recorded."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from aichat_gateway.marketplace.capacity import (
    DAY_MS,
    GRACE_MS,
    MINUTE_MS,
    Admission,
    CapacityState,
    Limits,
    Ticket,
    Usage,
    as_int,
    capacity_keys,
    listing_tag,
    parse_take,
    plan_take,
    refusing_limit,
    release_plan,
    resets_at_ms,
    too_large,
    violations,
    windows,
)
from aichat_gateway.marketplace.listings import LIMIT_FIELDS

LEASE_MS = 120_000


def ms(text: str) -> int:
    """'2024-02-29T23:59:59.999' (UTC) as unix milliseconds."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


# ---- limits ------------------------------------------------------------------------------------


def test_limits_have_exactly_the_listing_limit_fields() -> None:
    assert [f.name for f in fields(Limits)] == list(LIMIT_FIELDS)


def test_limits_from_a_stored_dict_keep_only_what_is_set() -> None:
    limits = Limits.of({"rpm": 50, "daily_tokens": 10_000, "tpm": None})
    assert limits == Limits(rpm=50, daily_tokens=10_000)
    assert limits.items() == [("rpm", 50), ("daily_tokens", 10_000)]


@pytest.mark.parametrize("value", [None, {}, Limits(rpm=3)])
def test_limits_of_accepts_none_empty_and_limits(value: object) -> None:
    assert Limits.of(value) in (Limits(), Limits(rpm=3))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value", [{"rph": 5}, {"rpm": -1}, {"rpm": "5"}, {"rpm": True}, {"tpm": 1.5}], ids=lambda v: repr(v)
)
def test_limits_of_rejects_unknown_names_and_non_integers(value: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Limits.of(value)


# ---- windows -----------------------------------------------------------------------------------


def test_a_minute_window_runs_from_its_first_to_its_last_millisecond() -> None:
    start = ms("2024-05-01T12:34:00")
    first, last, after = windows(start), windows(start + MINUTE_MS - 1), windows(start + MINUTE_MS)
    assert first.minute == last.minute == after.minute - 1
    assert first.minute_end_ms == last.minute_end_ms == start + MINUTE_MS == after.minute_end_ms - MINUTE_MS


@pytest.mark.parametrize(
    ("moment", "day", "month", "day_end", "month_end"),
    [
        ("2024-05-01T00:00:00", "20240501", "202405", "2024-05-02T00:00:00", "2024-06-01T00:00:00"),
        ("2024-05-31T23:59:59.999", "20240531", "202405", "2024-06-01T00:00:00", "2024-06-01T00:00:00"),
        ("2024-02-29T12:00:00", "20240229", "202402", "2024-03-01T00:00:00", "2024-03-01T00:00:00"),
        ("2023-02-28T23:59:59.999", "20230228", "202302", "2023-03-01T00:00:00", "2023-03-01T00:00:00"),
        ("2024-12-31T23:59:59.999", "20241231", "202412", "2025-01-01T00:00:00", "2025-01-01T00:00:00"),
        ("2025-01-01T00:00:00", "20250101", "202501", "2025-01-02T00:00:00", "2025-02-01T00:00:00"),
    ],
)
def test_day_and_month_windows_are_utc_calendar_days_and_months(
    moment: str, day: str, month: str, day_end: str, month_end: str
) -> None:
    w = windows(ms(moment))
    assert (w.day, w.month, w.day_end_ms, w.month_end_ms) == (day, month, ms(day_end), ms(month_end))


@given(st.integers(min_value=0, max_value=ms("2200-01-01T00:00:00")))
def test_every_moment_is_inside_its_windows(now_ms: int) -> None:
    w = windows(now_ms)
    assert 0 < w.minute_end_ms - now_ms <= MINUTE_MS
    assert 0 < w.day_end_ms - now_ms <= DAY_MS
    assert 0 < w.month_end_ms - now_ms <= 31 * DAY_MS
    assert windows(w.minute_end_ms - 1).minute == w.minute
    assert windows(w.day_end_ms - 1).day == w.day != windows(w.day_end_ms).day
    assert windows(w.month_end_ms - 1).month == w.month != windows(w.month_end_ms).month


# ---- keys --------------------------------------------------------------------------------------


def test_every_key_of_a_listing_shares_one_hash_slot() -> None:
    listing = "8b0c6a43-33f0-4b8e-9d39-2b7f2a4d6f10"
    keys = capacity_keys("aichat", listing, windows(ms("2024-05-01T12:00:00")))
    later = capacity_keys("aichat", listing, windows(ms("2025-07-09T03:00:00")))
    all_keys = [*vars_of(keys), *vars_of(later), f"{listing_tag('aichat', listing)}:breaker"]
    assert len({key_slot(k.encode()) for k in all_keys}) == 1
    assert all(k.startswith("{aichat:l:" + listing + "}:") for k in all_keys)


def test_different_listings_usually_land_in_different_slots() -> None:
    w = windows(0)
    slots = {key_slot(capacity_keys("p", f"listing-{i}", w).leases.encode()) for i in range(50)}
    assert len(slots) > 40


def vars_of(keys: object) -> list[str]:
    return [getattr(keys, f.name) for f in fields(keys)]  # type: ignore[arg-type]


@pytest.mark.parametrize(("prefix", "listing"), [("p", "a{b"), ("p", "a}b"), ("p{", "x")])
def test_braces_that_would_break_the_hash_tag_are_refused(prefix: str, listing: str) -> None:
    with pytest.raises(ValueError):
        listing_tag(prefix, listing)


# ---- which limit refuses -----------------------------------------------------------------------

ALL = Limits(rpm=10, tpm=1000, concurrency=3, daily_tokens=5000, monthly_tokens=50_000)


def test_nothing_refuses_below_every_limit() -> None:
    assert violations(Usage(2, 9, 600, 4600, 49_600), ALL, 400) == ()


@pytest.mark.parametrize(
    ("usage", "refused"),
    [
        (Usage(concurrency=3), ("concurrency",)),
        (Usage(rpm=10), ("rpm",)),
        (Usage(tpm=601), ("tpm",)),
        (Usage(daily_tokens=4601), ("daily_tokens",)),
        (Usage(monthly_tokens=49_601), ("monthly_tokens",)),
        (Usage(3, 10, 601, 4601, 49_601), ("rpm", "tpm", "concurrency", "daily_tokens", "monthly_tokens")),
    ],
)
def test_each_limit_refuses_the_request_that_would_exceed_it(usage: Usage, refused: tuple[str, ...]) -> None:
    assert violations(usage, ALL, 400) == refused


def test_unset_limits_never_refuse() -> None:
    assert violations(Usage(10**6, 10**6, 10**9, 10**9, 10**9), Limits(), 10**6) == ()


def test_a_limit_of_zero_refuses_everything() -> None:
    assert violations(Usage(), Limits(rpm=0), 0) == ("rpm",)


@given(
    used=st.integers(min_value=0, max_value=2000),
    limit=st.integers(min_value=0, max_value=2000),
    estimated=st.integers(min_value=0, max_value=2000),
)
def test_tokens_refuse_exactly_when_the_estimate_would_pass_the_limit(used: int, limit: int, estimated: int) -> None:
    assert (violations(Usage(tpm=used), Limits(tpm=limit), estimated) == ("tpm",)) == (used + estimated > limit)


def test_a_request_larger_than_a_token_limit_is_too_large_forever() -> None:
    assert too_large(ALL, 1000) is None
    assert too_large(ALL, 1001) == "tpm"
    assert too_large(Limits(daily_tokens=100, monthly_tokens=50), 80) == "monthly_tokens"
    assert too_large(Limits(rpm=1, concurrency=1), 10**9) is None


# ---- when it resets ----------------------------------------------------------------------------

NOW = ms("2024-05-31T23:59:30")


@pytest.mark.parametrize(
    ("limit", "reset"),
    [
        ("rpm", "2024-05-31T23:59:59.999"),
        ("tpm", "2024-05-31T23:59:59.999"),
        ("daily_tokens", "2024-05-31T23:59:59.999"),
        ("monthly_tokens", "2024-05-31T23:59:59.999"),
    ],
)
def test_window_limits_reset_when_their_window_ends(limit: str, reset: str) -> None:
    assert resets_at_ms(limit, windows(NOW), NOW, -1) == ms(reset) + 1


def test_concurrency_resets_by_the_soonest_lease_expiry_at_the_latest() -> None:
    assert resets_at_ms("concurrency", windows(NOW), NOW, NOW + 7000) == NOW + 7000
    assert resets_at_ms("concurrency", windows(NOW), NOW, -1) == NOW


def test_of_several_refusing_limits_the_one_resetting_last_is_reported() -> None:
    now = ms("2024-05-10T10:00:30")
    w = windows(now)
    assert refusing_limit(("rpm", "daily_tokens"), w, now, -1) == "daily_tokens"
    assert refusing_limit(("rpm", "monthly_tokens", "daily_tokens"), w, now, -1) == "monthly_tokens"
    assert refusing_limit(("rpm", "tpm"), w, now, -1) == "rpm"  # a tie: the first
    assert refusing_limit(("concurrency", "rpm"), w, now, now + 90_000) == "concurrency"
    assert refusing_limit(("concurrency", "rpm"), w, now, now + 1_000) == "rpm"


# ---- what is recorded --------------------------------------------------------------------------


def test_a_take_plan_names_its_keys_and_arguments_in_the_scripts_order() -> None:
    now = ms("2024-05-31T23:59:30")
    plan = plan_take("p", "L", Limits(rpm=5, daily_tokens=100), 40, "req-1", now, LEASE_MS)
    w = windows(now)
    assert plan.keys == (
        "{p:l:L}:leases",
        f"{{p:l:L}}:rpm:{w.minute}",
        f"{{p:l:L}}:tpm:{w.minute}",
        "{p:l:L}:tpd:20240531",
        "{p:l:L}:tpmo:202405",
    )
    assert plan.args == (
        now,
        now + LEASE_MS,
        "req-1",
        40,
        -1,  # concurrency: none
        5,
        -1,  # tpm: none
        100,
        -1,  # monthly: none
        LEASE_MS + GRACE_MS,
        30_000 + GRACE_MS,
        30_000 + GRACE_MS,
        30_000 + GRACE_MS,
    )
    assert plan.ticket == Ticket("L", "req-1", 40, now, ("rpm", "daily_tokens"))


def test_a_negative_estimate_is_a_bug() -> None:
    with pytest.raises(ValueError):
        plan_take("p", "L", Limits(), -1, "r", 0, LEASE_MS)


def test_a_release_corrects_only_the_recorded_token_counters_of_the_takes_windows() -> None:
    taken = ms("2024-05-31T23:59:30")
    ticket = Ticket("L", "r", 400, taken, ("rpm", "tpm", "monthly_tokens"))
    keys, args = release_plan("p", ticket, actual_tokens=150, cancel=False)
    w = windows(taken)
    assert keys == ["{p:l:L}:leases", f"{{p:l:L}}:tpm:{w.minute}", "{p:l:L}:tpmo:202405"]
    assert args == ["r", -250, -250]


def test_a_release_with_the_estimate_exact_only_frees_the_lease() -> None:
    assert release_plan("p", Ticket("L", "r", 400, 0, ("rpm", "tpm")), 400, cancel=False) == (["{p:l:L}:leases"], ["r"])


def test_a_release_over_the_estimate_adds_the_difference() -> None:
    _, args = release_plan("p", Ticket("L", "r", 100, 0, ("tpm",)), 130, cancel=False)
    assert args == ["r", 30]


def test_a_cancel_gives_back_the_request_and_every_token() -> None:
    keys, args = release_plan("p", Ticket("L", "r", 400, 0, ("rpm", "daily_tokens")), 0, cancel=True)
    assert keys == ["{p:l:L}:leases", "{p:l:L}:rpm:0", "{p:l:L}:tpd:19700101"]
    assert args == ["r", -1, -400]


# ---- parsing the script's reply ----------------------------------------------------------------


def test_an_admitted_reply_hands_back_the_plans_ticket_and_usage() -> None:
    plan = plan_take("p", "L", Limits(rpm=5), 40, "r", ms("2024-05-01T00:00:10"), LEASE_MS)
    admission = parse_take([1, 2, 3, 0, 0, 0, -1], plan)
    assert admission == Admission(True, ticket=plan.ticket, usage=Usage(2, 3, 0, 0, 0))


def test_a_duplicate_take_is_admitted_without_counting_again() -> None:
    plan = plan_take("p", "L", Limits(rpm=5), 40, "r", 0, LEASE_MS)
    assert parse_take([2, 1, 5, 0, 0, 0, -1], plan).admitted


def test_a_refused_reply_names_the_limit_and_seconds_to_its_reset() -> None:
    now = ms("2024-05-01T00:00:10")
    plan = plan_take("p", "L", Limits(rpm=5, concurrency=2), 40, "r", now, LEASE_MS)
    rpm = parse_take([0, 1, 5, 0, 0, 0, str(now + 3000).encode()], plan)
    assert (rpm.admitted, rpm.limit, rpm.retry_after, rpm.ticket) == (False, "rpm", 50.0, None)
    assert rpm.exhausts_listing
    busy = parse_take([0, 2, 1, 0, 0, 0, f"{now + 3000}".encode()], plan)
    assert (busy.limit, busy.retry_after, busy.exhausts_listing) == ("concurrency", 3.0, False)


def test_a_refusal_the_python_rule_cannot_explain_is_loud() -> None:
    plan = plan_take("p", "L", Limits(rpm=5), 40, "r", 0, LEASE_MS)
    with pytest.raises(RuntimeError):
        parse_take([0, 0, 1, 0, 0, 0, -1], plan)


def test_a_too_large_refusal_does_not_exhaust_the_listing() -> None:
    assert not Admission(False, limit="tpm", retry_after=None).exhausts_listing


@pytest.mark.parametrize(("raw", "value"), [(5, 5), (b"17", 17), ("-1", -1), (b"1.7e+12", 1_700_000_000_000)])
def test_redis_numbers_in_any_shape_parse(raw: object, value: int) -> None:
    assert as_int(raw) == value


# ---- state -------------------------------------------------------------------------------------


def test_state_reports_remaining_and_the_tightest_headroom() -> None:
    state = CapacityState("L", Usage(concurrency=1, rpm=45, tpm=100), Limits(rpm=50, tpm=1000, concurrency=4))
    assert state.remaining() == {"rpm": 5, "tpm": 900, "concurrency": 3}
    assert state.headroom() == pytest.approx(0.1)
    assert state.refusing(0) == ()
    assert state.refusing(901) == ("tpm",)


def test_an_unlimited_listing_has_full_headroom_and_an_overrun_one_none() -> None:
    assert CapacityState("L", Usage(rpm=10**6), Limits()).headroom() == 1.0
    assert CapacityState("L", Usage(rpm=60), Limits(rpm=50)).headroom() == 0.0
    assert CapacityState("L", Usage(), Limits(rpm=0)).headroom() == 0.0
