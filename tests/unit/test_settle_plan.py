"""Settlement decisions without I/O: validating stream entries, batching, legs and backoff."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aichat_gateway.billing.meter import UsageEvent
from aichat_gateway.billing.settleplan import (
    COLLISION,
    MODEL_MAX_CHARS,
    Charge,
    Entry,
    Poison,
    backoff_delay,
    charge_of,
    idempotency_key,
    outcome,
    parse_event,
    plan_batch,
    read_entry,
    usage_legs,
)

BUYER = str(uuid.uuid4())
SELLER = str(uuid.uuid4())
LISTING = str(uuid.uuid4())
KEY = str(uuid.uuid4())
TS_MS = 1_717_171_717_123


def event(**changes: object) -> dict[str, str]:
    """A metered event as the gateway writes it (UsageEvent.fields), with some fields changed."""
    base = UsageEvent(
        request_id="req_0123456789abcdef",
        key_id=KEY,
        user_id=BUYER,
        listing_id=LISTING,
        model="gpt-4o-mini",
        prompt_tokens=12,
        completion_tokens=34,
        usage_source="upstream",
        latency_ms=250,
        ttft_ms=40,
        outcome="ok",
        status=200,
        attempts=1,
        stream=True,
        ts_ms=TS_MS,
        seller_id=SELLER,
        cost_micro=700,
        held_micro=1_000,
    ).fields()
    base.update({name: str(value) for name, value in changes.items()})
    return base


def fields_of(value: object) -> dict[bytes, bytes]:
    return {b"e": orjson.dumps(value)}


def entry(entry_id: str = "1-0", **changes: object) -> Entry:
    return read_entry(entry_id, fields_of(event(**changes)))


def reason_of(value: dict[bytes, bytes] | None) -> str:
    read = read_entry("1-0", value)
    assert read.usage is None and read.reason is not None
    return read.reason


# ---- one entry -----------------------------------------------------------------------------------


def test_a_metered_event_reads_as_its_usage_row() -> None:
    usage = entry().usage
    assert usage is not None
    assert (usage.request_id, usage.buyer_id, usage.key_id, usage.listing_id, usage.seller_id) == (
        "req_0123456789abcdef",
        BUYER,
        KEY,
        LISTING,
        SELLER,
    )
    assert (usage.model, usage.prompt_tokens, usage.completion_tokens) == ("gpt-4o-mini", 12, 34)
    assert (usage.cost_micro, usage.held_micro, usage.outcome, usage.status, usage.stream) == (
        700,
        1_000,
        "ok",
        200,
        True,
    )


def test_the_event_time_keeps_its_milliseconds_exactly() -> None:
    usage = entry().usage
    assert usage is not None
    assert usage.created_at == datetime(2024, 5, 31, 16, 8, 37, 123_000, tzinfo=UTC)


def test_a_request_that_reached_no_listing_has_no_listing_or_seller() -> None:
    usage = entry(listing_id="", seller_id="", cost_micro=0, held_micro=0, outcome="no_listing").usage
    assert usage is not None and usage.listing_id is None and usage.seller_id is None


def test_uuids_are_kept_in_their_canonical_form() -> None:
    usage = entry(user_id=BUYER.upper()).usage
    assert usage is not None and usage.buyer_id == BUYER


def test_a_long_model_name_is_cut_not_refused() -> None:
    usage = entry(model="m" * 1000).usage
    assert usage is not None and usage.model == "m" * MODEL_MAX_CHARS


def test_a_request_that_cost_nothing_needs_no_hold() -> None:
    usage = entry(cost_micro=0, held_micro=0).usage
    assert usage is not None and usage.cost_micro == 0


def test_a_charge_equal_to_its_hold_is_valid() -> None:
    usage = entry(cost_micro=1_000, held_micro=1_000).usage
    assert usage is not None and usage.cost_micro == 1_000


# ---- poison ---------------------------------------------------------------------------------------


def test_an_entry_trimmed_from_the_stream_is_poison() -> None:
    assert "gone" in reason_of({})
    assert "gone" in reason_of(None)


def test_an_entry_without_the_event_field_is_poison() -> None:
    assert "'e'" in reason_of({b"x": b"{}"})


def test_an_event_that_is_not_json_is_poison() -> None:
    assert "not JSON" in reason_of({b"e": b"{not json"})


def test_an_event_that_is_not_an_object_is_poison() -> None:
    assert "not a JSON object" in reason_of(fields_of([1, 2]))


def test_a_missing_field_is_poison_and_named() -> None:
    value = event()
    del value["request_id"]
    assert reason_of(fields_of(value)).startswith("request_id:")


def test_a_number_given_as_json_number_is_poison() -> None:
    value: dict[str, object] = {**event(), "cost_micro": 700}
    assert reason_of(fields_of(value)).startswith("cost_micro:")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", ""),
        ("request_id", "has space"),
        ("user_id", "not-a-uuid"),
        ("user_id", ""),
        ("key_id", "nope"),
        ("seller_id", "nope"),
        ("cost_micro", "-1"),
        ("cost_micro", "1.5"),
        ("cost_micro", str(2**63)),
        ("prompt_tokens", str(2**31)),
        ("completion_tokens", "x"),
        ("status", "1000"),
        ("outcome", "Not An Outcome"),
        ("stream", "true"),
        ("ts_ms", "12"),
        ("model", "gpt\x00"),
    ],
)
def test_a_malformed_field_is_poison_and_named(field: str, value: str) -> None:
    assert reason_of(fields_of(event(**{field: value}))).startswith(f"{field}:")


def test_a_charge_with_no_seller_is_poison() -> None:
    assert reason_of(fields_of(event(seller_id=""))).startswith("cost_micro:")


def test_a_charge_above_its_hold_is_poison() -> None:
    assert "more than the 1000 held" in reason_of(fields_of(event(cost_micro=1_001)))


def test_a_charge_with_no_hold_is_poison() -> None:
    assert reason_of(fields_of(event(held_micro=0))).startswith("cost_micro:")


def test_a_poison_entry_keeps_its_raw_event_for_the_dead_stream() -> None:
    raw = orjson.dumps({"request_id": "x"})
    assert read_entry("1-0", {b"e": raw}).raw == raw


# ---- a batch --------------------------------------------------------------------------------------


def test_a_batch_keeps_one_row_per_request_and_reports_every_delivery() -> None:
    plan = plan_batch([entry("1-0"), entry("2-0", request_id="req_other_000001"), entry("3-0")])
    assert [u.request_id for u in plan.usages] == ["req_0123456789abcdef", "req_other_000001"]
    settled, dead = outcome(plan, {})
    assert settled == [(BUYER, "req_0123456789abcdef"), (BUYER, "req_other_000001"), (BUYER, "req_0123456789abcdef")]
    assert dead == []
    assert plan.entry_ids == ["1-0", "2-0", "3-0"]


def test_a_different_request_under_a_used_id_goes_to_the_dead_stream() -> None:
    other = entry("2-0", cost_micro=900)
    plan = plan_batch([entry("1-0"), other])
    assert len(plan.usages) == 1 and plan.usages[0].cost_micro == 700
    settled, dead = outcome(plan, {})
    assert settled == [(BUYER, "req_0123456789abcdef")]
    assert dead == [(other, COLLISION)]


def test_poison_is_set_aside_and_still_acked() -> None:
    bad = read_entry("2-0", {b"e": b"garbage"})
    plan = plan_batch([entry("1-0"), bad])
    settled, dead = outcome(plan, {})
    assert len(settled) == 1 and [e for e, _ in dead] == [bad]
    assert plan.entry_ids == ["1-0", "2-0"]


def test_requests_postgres_refused_move_to_the_dead_with_every_delivery() -> None:
    plan = plan_batch([entry("1-0"), entry("2-0", request_id="req_other_000001"), entry("3-0")])
    settled, dead = outcome(plan, {"req_0123456789abcdef": "why"})
    assert settled == [(BUYER, "req_other_000001")]
    assert [(e.entry_id, reason) for e, reason in dead] == [("1-0", "why"), ("3-0", "why")]


# ---- money ----------------------------------------------------------------------------------------


def test_a_usage_charge_debits_the_buyer_and_splits_between_seller_and_platform() -> None:
    legs = usage_legs(1_000, Charge(seller_micro=900, fee_micro=100), buyer=1, seller=2, platform=3)
    assert legs == [(1, -1_000), (2, 900), (3, 100)]


def test_a_zero_fee_leaves_the_platform_out() -> None:
    assert usage_legs(5, Charge(5, 0), buyer=1, seller=2, platform=3) == [(1, -5), (2, 5)]


@given(st.integers(1, 10**15), st.decimals(0, 1, places=4))
def test_legs_always_sum_to_zero(cost: int, rate: Decimal) -> None:
    usage = entry(cost_micro=cost, held_micro=cost).usage
    assert usage is not None
    legs = usage_legs(cost, charge_of(usage, rate), buyer=1, seller=2, platform=3)
    assert sum(amount for _, amount in legs) == 0 and all(amount != 0 for _, amount in legs)


def test_the_fee_is_the_ledgers_split() -> None:
    usage = entry(cost_micro=999, held_micro=999).usage
    assert usage is not None
    assert charge_of(usage, Decimal("0.10")) == Charge(seller_micro=900, fee_micro=99)


def test_a_request_whose_seller_is_its_buyer_earns_the_seller_nothing() -> None:
    usage = entry(seller_id=BUYER, cost_micro=999, held_micro=999).usage
    assert usage is not None
    charge = charge_of(usage, Decimal("0.10"))
    assert charge == Charge(seller_micro=0, fee_micro=999)
    assert usage_legs(999, charge, buyer=1, seller=2, platform=3) == [(1, -999), (3, 999)]


def test_the_transfer_key_is_the_request_id() -> None:
    assert idempotency_key("req_1") == "usage:req_1"


def test_backoff_doubles_from_a_tenth_of_a_second() -> None:
    assert [backoff_delay(n) for n in (0, 1, 2, 3)] == [0.0, 0.1, 0.2, 0.4]


def test_backoff_stops_growing_at_five_seconds() -> None:
    assert backoff_delay(7) == 5.0 and backoff_delay(10_000) == 5.0


def test_an_event_without_a_beyond_hold_field_settles_with_nothing_beyond_the_hold() -> None:
    """Events written by a gateway from before the field existed are still valid."""
    fields = {k: v for k, v in _beyond_event(0).items() if k != "beyond_hold_micro"}
    assert parse_event(fields).beyond_hold_micro == 0


def test_a_cost_beyond_the_hold_is_read_and_the_seller_is_paid_on_all_of_it() -> None:
    usage = parse_event(_beyond_event(500))
    assert usage.beyond_hold_micro == 500
    charge = charge_of(usage, Decimal("0.10"))
    assert charge.seller_micro + charge.fee_micro == usage.cost_micro + 500
    legs = usage_legs(usage.cost_micro, charge, 1, 2, 3, beyond_hold_micro=500, exposure=4)
    assert sum(amount for _, amount in legs) == 0
    assert (1, -usage.cost_micro) in legs and (4, -500) in legs


def test_a_cost_beyond_a_hold_that_was_never_taken_is_poison() -> None:
    event = {**_beyond_event(500), "held_micro": "0", "cost_micro": "0"}
    with pytest.raises(Poison, match="beyond_hold_micro"):
        parse_event(event)


def _beyond_event(beyond: int) -> dict[str, str]:
    event = UsageEvent(
        request_id="req-beyond",
        key_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        listing_id=str(uuid.uuid4()),
        model="m",
        prompt_tokens=170_010,
        completion_tokens=1,
        usage_source="upstream",
        latency_ms=1,
        ttft_ms=1,
        outcome="ok",
        status=200,
        attempts=1,
        stream=False,
        ts_ms=1_717_171_717_000,
        seller_id=str(uuid.uuid4()),
        cost_micro=34_080,
        held_micro=34_080,
        beyond_hold_micro=beyond,
    )
    return event.fields()
