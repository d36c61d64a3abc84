"""The breaker's pure state machine, its notices and the in-process view, with an injected clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from aichat_gateway.marketplace.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    BreakerConfig,
    Breakers,
    BreakerState,
    BreakerView,
    Notice,
    Permit,
    Transition,
    Verdict,
    breaker_key,
    decide,
    parse_hash,
    parse_reply,
    verdict,
)

CONFIG = BreakerConfig(fail_max=3, reset_ms=30_000, probe_ms=10_000)
T0 = 1_700_000_000_000
OPENED = BreakerState(OPEN, failures=3, retry_at_ms=T0 + 30_000, version=T0)
PROBING = BreakerState(HALF_OPEN, failures=3, retry_at_ms=T0 + 40_000, probe="p1", version=T0 + 30_000)


# ---- closed ------------------------------------------------------------------------------------


def test_closed_lets_requests_through_without_changing() -> None:
    assert decide(BreakerState(), "allow", T0, CONFIG, "tok") == Transition(BreakerState(), allowed=True)


def test_closed_counts_consecutive_failures() -> None:
    t = decide(BreakerState(failures=1), "failure", T0, CONFIG)
    assert t == Transition(BreakerState(failures=2))


def test_a_success_resets_the_count_quietly() -> None:
    assert decide(BreakerState(failures=2), "success", T0, CONFIG) == Transition(BreakerState(failures=0))
    assert decide(BreakerState(), "success", T0, CONFIG) == Transition(BreakerState())


def test_the_fail_max_th_consecutive_failure_opens_and_publishes() -> None:
    t = decide(BreakerState(failures=2, version=5), "failure", T0, CONFIG)
    assert t.state == BreakerState(OPEN, failures=3, retry_at_ms=T0 + 30_000, version=T0)
    assert (t.published, t.allowed) == (True, False)


def test_fail_max_one_opens_on_the_first_failure() -> None:
    assert decide(BreakerState(), "failure", T0, BreakerConfig(fail_max=1)).state.mode == OPEN


def test_abandon_while_closed_changes_nothing() -> None:
    assert decide(BreakerState(failures=1), "abandon", T0, CONFIG, "x") == Transition(BreakerState(failures=1))


# ---- open --------------------------------------------------------------------------------------


def test_open_refuses_until_the_reset_timeout() -> None:
    assert decide(OPENED, "allow", T0 + 29_999, CONFIG, "tok") == Transition(OPENED)


def test_after_the_reset_timeout_exactly_one_request_becomes_the_probe() -> None:
    t = decide(OPENED, "allow", T0 + 30_000, CONFIG, "tok")
    assert t.state == BreakerState(HALF_OPEN, 3, T0 + 40_000, "tok", T0 + 30_000)
    assert (t.allowed, t.is_probe, t.published) == (True, True, True)
    second = decide(t.state, "allow", T0 + 30_001, CONFIG, "other")
    assert second == Transition(t.state)


@pytest.mark.parametrize("event", ["success", "failure", "abandon"])
@pytest.mark.parametrize("probe", ["", "stale"])
def test_results_while_open_are_stale_and_ignored(event: str, probe: str) -> None:
    assert decide(OPENED, event, T0 + 1, CONFIG, probe) == Transition(OPENED)


# ---- half-open ---------------------------------------------------------------------------------


def test_the_probes_success_closes() -> None:
    t = decide(PROBING, "success", T0 + 31_000, CONFIG, "p1")
    assert t.state == BreakerState(CLOSED, 0, 0, "", T0 + 31_000)
    assert t.published


def test_the_probes_failure_reopens_with_a_fresh_timer() -> None:
    t = decide(PROBING, "failure", T0 + 31_000, CONFIG, "p1")
    assert t.state == BreakerState(OPEN, 3, T0 + 61_000, "", T0 + 31_000)
    assert t.published
    assert decide(t.state, "allow", T0 + 60_999, CONFIG, "q").allowed is False
    assert decide(t.state, "allow", T0 + 61_000, CONFIG, "q").is_probe


@pytest.mark.parametrize("event", ["success", "failure", "abandon"])
@pytest.mark.parametrize("probe", ["", "p0", "someone-else"])
def test_results_of_other_requests_do_not_decide_a_half_open_breaker(event: str, probe: str) -> None:
    assert decide(PROBING, event, T0 + 31_000, CONFIG, probe) == Transition(PROBING)


def test_others_are_refused_while_the_probe_is_out() -> None:
    assert decide(PROBING, "allow", T0 + 39_999, CONFIG, "q") == Transition(PROBING)


def test_a_probe_slot_held_by_a_crashed_process_expires_after_probe_timeout() -> None:
    t = decide(PROBING, "allow", T0 + 40_000, CONFIG, "p2")
    assert t.state == BreakerState(HALF_OPEN, 3, T0 + 50_000, "p2", T0 + 40_000)
    assert (t.allowed, t.is_probe, t.published) == (True, True, True)
    # the crashed probe's late answer no longer decides
    assert decide(t.state, "success", T0 + 41_000, CONFIG, "p1") == Transition(t.state)


def test_an_abandoned_probe_frees_the_slot_at_once() -> None:
    t = decide(PROBING, "abandon", T0 + 31_000, CONFIG, "p1")
    assert t.state == BreakerState(OPEN, 3, T0 + 31_000, "", T0 + 31_000)
    assert decide(t.state, "allow", T0 + 31_000, CONFIG, "p2").is_probe


def test_unknown_events_are_a_bug() -> None:
    with pytest.raises(ValueError):
        decide(BreakerState(), "explode", T0, CONFIG)


def test_an_allow_without_a_probe_token_is_a_bug() -> None:
    with pytest.raises(ValueError):
        decide(OPENED, "allow", T0 + 30_000, CONFIG, "")


# ---- invariants over random histories ----------------------------------------------------------

EVENT = st.tuples(
    st.sampled_from(["allow", "success", "failure", "abandon"]),
    st.sampled_from(["", "a", "b", "c"]),
    st.integers(min_value=0, max_value=45_000),
)


@given(st.lists(EVENT, max_size=60))
def test_random_histories_keep_the_invariants(events: list[tuple[str, str, int]]) -> None:
    state, now = BreakerState(), T0
    for event, token, step in events:
        now += step
        before = state
        token = (token or "z") if event == "allow" else (token or state.probe)
        t = decide(state, event, now, CONFIG, token)
        state = t.state
        assert state.version >= before.version
        assert (state.version > before.version) == t.published
        assert (state.mode == HALF_OPEN) == (state.probe != "")
        assert t.is_probe <= t.allowed
        if event == "allow" and t.allowed and not t.is_probe:
            assert before.mode == CLOSED
        if t.is_probe:
            assert now >= before.retry_at_ms and before.mode != CLOSED and state.probe == token
        if state.mode == CLOSED:
            assert state.failures < CONFIG.fail_max and state.retry_at_ms == 0
        if before.mode != CLOSED and state.mode == CLOSED:
            assert before.mode == HALF_OPEN and event == "success"


# ---- notices and verdicts ----------------------------------------------------------------------


def test_a_notice_survives_the_wire() -> None:
    notice = Notice("8b0c6a43-33f0-4b8e-9d39-2b7f2a4d6f10", T0, OPEN, T0 + 30_000)
    assert Notice.decode(notice.encode().encode()) == notice
    assert Notice.decode(notice.encode()) == notice


@pytest.mark.parametrize("text", ["", "1 open", "x open 5 L", "1 ajar 5 L", "1 open 5 "])
def test_malformed_notices_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Notice.decode(text)


def test_verdicts_follow_mode_and_time() -> None:
    assert verdict(None, T0) is Verdict.ROUTE
    assert verdict(Notice("L", 1, CLOSED, 0), T0) is Verdict.ROUTE
    assert verdict(Notice("L", 1, OPEN, T0 + 1), T0) is Verdict.SKIP
    assert verdict(Notice("L", 1, OPEN, T0), T0) is Verdict.PROBE
    assert verdict(Notice("L", 1, HALF_OPEN, T0 + 1), T0) is Verdict.SKIP
    assert verdict(Notice("L", 1, HALF_OPEN, T0), T0) is Verdict.PROBE


def test_replies_and_hashes_parse_from_bytes() -> None:
    reply = parse_reply([1, 1, b"half_open", 3, T0, b"tok", T0 - 5])
    assert (reply.allowed, reply.is_probe) == (True, True)
    assert reply.state == BreakerState(HALF_OPEN, 3, T0, "tok", T0 - 5)
    assert parse_hash([None, None, None, None, None]) == BreakerState()
    assert parse_hash([b"open", b"5", str(T0).encode(), b"", b"7"]) == BreakerState(OPEN, 5, T0, "", 7)


def test_a_permit_is_truthy_only_when_allowed() -> None:
    assert Permit("L", True, None, BreakerState())
    assert not Permit("L", False, None, OPENED)


def test_the_breaker_key_sits_in_the_listings_hash_slot() -> None:
    assert breaker_key("aichat", "L1") == "{aichat:l:L1}:breaker"


# ---- the view, without Redis -------------------------------------------------------------------


@pytest.fixture
def view() -> BreakerView:
    breakers = Breakers(Redis(), "p", clock=lambda: T0 / 1000)  # never connects in these tests
    return BreakerView(breakers, lambda: [], clock=lambda: T0 / 1000)


def test_the_view_routes_to_listings_it_knows_nothing_about(view: BreakerView) -> None:
    assert view.verdict("L") is Verdict.ROUTE


def test_the_view_applies_newer_notices_only(view: BreakerView) -> None:
    assert view.apply(Notice("L", 10, OPEN, T0 + 1000))
    assert view.verdict("L") is Verdict.SKIP
    assert not view.apply(Notice("L", 9, CLOSED, 0))
    assert not view.apply(Notice("L", 10, CLOSED, 0))
    assert view.verdict("L") is Verdict.SKIP
    assert view.verdict("L", now=(T0 + 1000) / 1000) is Verdict.PROBE
    assert view.apply(Notice("L", 11, CLOSED, 0))
    assert view.verdict("L") is Verdict.ROUTE
    assert view.not_closed() == {}


def test_the_view_reports_every_change(view: BreakerView) -> None:
    seen: list[Notice] = []
    view = BreakerView(Breakers(Redis(), "p"), lambda: [], on_change=seen.append)
    view.apply_state("L", BreakerState(OPEN, 5, T0, "", 3))
    view.apply_state("L", BreakerState(OPEN, 5, T0, "", 3))
    assert seen == [Notice("L", 3, OPEN, T0)]


def test_breaker_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        Breakers(Redis(), "p", fail_max=0)
    with pytest.raises(ValueError):
        Breakers(Redis(), "p", probe_timeout=0)


def test_unroutable_lists_only_listings_the_router_must_not_treat_as_closed(view: BreakerView) -> None:
    view.apply(Notice("open", 1, OPEN, T0 + 1))
    view.apply(Notice("due", 1, OPEN, T0))
    view.apply(Notice("probing", 1, HALF_OPEN, T0 + 5))
    view.apply(Notice("closed", 1, CLOSED, 0))
    assert view.unroutable() == {"open": Verdict.SKIP, "due": Verdict.PROBE, "probing": Verdict.SKIP}
    assert view.unroutable(now=(T0 + 5) / 1000) == {
        "open": Verdict.PROBE,
        "due": Verdict.PROBE,
        "probing": Verdict.PROBE,
    }
    view.apply(Notice("open", 2, CLOSED, 0))
    assert set(view.unroutable()) == {"due", "probing"}
    assert set(view.not_closed()) == {"due", "probing"}
