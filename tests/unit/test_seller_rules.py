"""The seller pages' pure parts: the listing form to the API's bodies and its problems back to the
form's fields, a breaker and capacity as a seller reads them, the payout rules in words."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from aichat_gateway.billing.earnings import DayEarning
from aichat_gateway.dashboard import listingform
from aichat_gateway.dashboard.seller_money import chart_points, payout_rules
from aichat_gateway.dashboard.templating import PageUser, nav_for
from aichat_gateway.marketplace.breaker import HALF_OPEN, OPEN, BreakerState
from aichat_gateway.marketplace.capacity import CapacityState, Limits, Usage
from aichat_gateway.marketplace.health import CapacityLine, breaker_shown, capacity_lines


def test_each_line_of_the_models_box_is_a_model_with_its_upstream_name_after_an_equals_sign() -> None:
    text = "gpt-4o-mini\n\n  house-1 = gpt-4o  \n"
    assert listingform.parse_models(text) == [
        {"model": "gpt-4o-mini"},
        {"model": "house-1", "upstream_model": "gpt-4o"},
    ]


def test_stored_models_are_written_back_as_the_form_takes_them() -> None:
    models = [{"model": "a", "upstream_model": "a"}, {"model": "b", "upstream_model": "b-2024"}]
    assert listingform.models_text(models) == "a\nb=b-2024"


def test_the_pricing_mode_picks_the_multiplier_or_the_two_explicit_prices() -> None:
    values = {"multiplier": " 0.8 ", "input_usd_per_million": "1", "output_usd_per_million": "2"}
    assert listingform.pricing_body({**values, "pricing_mode": "multiplier"}) == {"multiplier": "0.8"}
    assert listingform.pricing_body({**values, "pricing_mode": "explicit"}) == {
        "input_usd_per_million": "1",
        "output_usd_per_million": "2",
    }


def test_limit_boxes_send_whole_numbers_as_numbers_and_anything_else_as_typed() -> None:
    assert listingform.limits_body({"rpm": "60", "tpm": " ", "concurrency": "two"}) == {"rpm": 60, "concurrency": "two"}
    assert listingform.limits_body({}) is None


def test_the_attestation_is_true_only_when_the_box_was_ticked() -> None:
    assert listingform.create_body({"attest_resale": "yes"})["attest_resale"] is True
    assert listingform.create_body({})["attest_resale"] is False
    assert "limits" not in listingform.create_body({})


def test_an_edit_sends_the_base_url_only_when_it_changed_and_the_key_only_when_typed() -> None:
    same = listingform.patch_body({"name": "n", "base_url": "https://a/v1", "api_key": ""}, "https://a/v1")
    assert "base_url" not in same and "api_key" not in same
    assert same["limits"] is None  # every box empty: the listing's limits are removed
    moved = listingform.patch_body({"name": "n", "base_url": "https://b/v1", "api_key": "sk-1"}, "https://a/v1")
    assert (moved["base_url"], moved["api_key"]) == ("https://b/v1", "sk-1")


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("models.0.model", "models"),
        ("models.3", "models"),
        ("models", "models"),
        ("pricing.multiplier", "multiplier"),
        ("pricing.input_usd_per_million", "input_usd_per_million"),
        ("pricing", "pricing"),
        ("limits.rpm", "rpm"),
        ("attest_resale", "attest_resale"),
        ("", ""),
    ],
)
def test_a_problem_at_an_api_path_lands_on_the_form_field_that_holds_it(path: str, field: str) -> None:
    assert listingform.form_field(path) == field


def test_a_model_lines_problem_says_which_line_and_the_first_problem_per_field_wins() -> None:
    shown = listingform.form_problems({"models.1.model": "bad name", "models.2.model": "also bad", "name": "empty"})
    assert shown == {"models": "line 2: bad name", "name": "empty"}


def test_a_stored_price_fills_the_form_in_its_own_mode() -> None:
    by_multiplier = {"price_multiplier": Decimal("0.800"), "input_micro_per_million": None}
    assert listingform.pricing_values(by_multiplier) == {"pricing_mode": "multiplier", "multiplier": "0.8"}
    explicit = {"price_multiplier": None, "input_micro_per_million": 150_000, "output_micro_per_million": 600_000}
    assert listingform.pricing_values(explicit) == {
        "pricing_mode": "explicit",
        "input_usd_per_million": "0.150000",
        "output_usd_per_million": "0.600000",
    }


def test_an_open_breaker_says_when_its_probe_may_go() -> None:
    shown = breaker_shown(BreakerState(mode=OPEN, failures=5, retry_at_ms=1_800_000_000_000), 5)
    assert (shown.state, shown.failures) == ("open", 5)
    assert shown.retry_at == datetime(2027, 1, 15, 8, 0, tzinfo=UTC)


def test_a_half_open_breaker_is_spelled_in_words_and_a_closed_one_keeps_its_count() -> None:
    assert breaker_shown(BreakerState(mode=HALF_OPEN, failures=5), 5).state == "half-open"
    closed = breaker_shown(BreakerState(failures=2), 5)
    assert (closed.state, closed.failures, closed.fail_max, closed.retry_at) == ("closed", 2, 5, None)


def test_capacity_shows_the_minute_counters_always_and_the_caps_only_where_set() -> None:
    state = CapacityState("l1", Usage(concurrency=1, rpm=7, tpm=900, daily_tokens=50), Limits(rpm=60, daily_tokens=10))
    assert capacity_lines(state) == (
        CapacityLine("rpm", 7, 60),
        CapacityLine("tpm", 900, None),
        CapacityLine("concurrency", 1, None),
        CapacityLine("daily_tokens", 50, 10),
    )


def test_the_payout_rules_name_the_minimum_the_holding_period_and_the_approval_amount() -> None:
    rules = payout_rules(Decimal("10"), 7, Decimal("1000"))
    assert rules == [
        "The smallest payout is $10.00; amounts are whole cents.",
        "Earnings from the last 7 days are held before they can be paid out.",
        "A payout above $1000.00 waits for an administrator's approval.",
    ]
    assert payout_rules(Decimal("5"), 0, Decimal("0"))[1] == "Earnings can be paid out as soon as they are settled."


def test_the_chart_points_are_the_days_as_the_table_shows_them() -> None:
    assert chart_points((DayEarning(date(2026, 12, 7), 36, 4),)) == [
        {"date": "2026-12-07", "earned_usd": "0.000036", "requests": 4}
    ]


def test_every_user_has_the_seller_section_and_it_is_current_on_its_sub_pages() -> None:
    user = PageUser(id="u", email="u@example.com", role="user")
    current = [e["path"] for e in nav_for(user, "/app/seller/listings/new") if e["current"]]
    assert current == ["/app/seller"]
