"""Payout decisions (amounts, minimum, the holding period, approval, replays, states, ISO weeks, request
bodies, the earnings window) and the Stripe client's transfer call over an in-memory httpx transport:
localstripe has no /v1/transfers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import orjson
import pytest

from aichat_gateway import apibody
from aichat_gateway.billing.errors import BillingNotFound, Conflict, InvalidBillingInput, PaymentsUnavailable
from aichat_gateway.billing.payoutplan import (
    EVERYTHING,
    approval_micro,
    cents,
    check_approvable,
    check_pending,
    check_replay,
    decide_amount,
    hold_start,
    iso_week,
    min_payout_micro,
    needs_approval,
    requested_value,
    run_key,
    split_earnings,
)
from aichat_gateway.billing.payouts import _id
from aichat_gateway.billing.schemas import MarkPaid, PayoutAccountRequest, PayoutRequest
from aichat_gateway.billing.seller_api import earnings_window, request_key
from aichat_gateway.billing.stripe_client import StripeClient, StripeTransfer, TransferRefused
from aichat_gateway.config.settings import load_settings

pytestmark = pytest.mark.timeout(10)

USD = 1_000_000
MIN = 10 * USD


# The request bodies, read as the API reads them (billing/schemas.py, apibody).
def parse_payout_request(body: object) -> int | None:
    return apibody.validate(PayoutRequest, body, InvalidBillingInput).amount_usd


def parse_stripe_account(body: object) -> str:
    return apibody.validate(PayoutAccountRequest, body, InvalidBillingInput).stripe_account_id


def parse_reference(body: object) -> str:
    return apibody.validate(MarkPaid, body, InvalidBillingInput).reference


NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)


# ---- amounts -------------------------------------------------------------------------------------


def test_the_minimum_setting_becomes_micro_usd() -> None:
    assert min_payout_micro(Decimal("10")) == MIN
    assert min_payout_micro(Decimal("12.5")) == 12_500_000


def test_everything_available_is_floored_to_the_cent() -> None:
    assert decide_amount(None, 25_123_456, MIN) == 25_120_000


def test_an_explicit_amount_within_what_is_available_is_taken_as_asked() -> None:
    assert decide_amount(12 * USD, 25 * USD, MIN) == 12 * USD


def test_an_explicit_amount_of_exactly_everything_is_allowed() -> None:
    assert decide_amount(25 * USD, 25 * USD, MIN) == 25 * USD


def test_an_explicit_amount_below_the_minimum_is_a_bad_request() -> None:
    with pytest.raises(InvalidBillingInput) as caught:
        decide_amount(9 * USD, 100 * USD, MIN)
    assert caught.value.param == "amount_usd"


def test_an_explicit_amount_below_the_minimum_is_a_bad_request_even_when_more_than_available() -> None:
    with pytest.raises(InvalidBillingInput):
        decide_amount(9 * USD, 1 * USD, MIN)


def test_an_amount_above_what_is_available_is_a_conflict() -> None:
    with pytest.raises(Conflict) as caught:
        decide_amount(30 * USD, 25 * USD, MIN)
    assert "25.000000" in caught.value.message


def test_everything_when_everything_is_below_the_minimum_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        decide_amount(None, MIN - 1, MIN)


def test_everything_when_the_sub_cent_floor_drops_below_the_minimum_is_a_conflict() -> None:
    with pytest.raises(Conflict):
        decide_amount(None, 10_005_000, 10_005_000)


def test_a_negative_balance_has_nothing_available() -> None:
    with pytest.raises(Conflict) as caught:
        decide_amount(None, -5 * USD, MIN)
    assert caught.value.message.startswith("0.000000")


def test_cents_are_the_floor_of_micro_usd() -> None:
    assert (cents(12_340_000), cents(12_349_999), cents(0)) == (1234, 1234, 0)


# ---- request bodies ------------------------------------------------------------------------------


def test_an_empty_payout_request_asks_for_everything() -> None:
    assert parse_payout_request({}) is None
    assert parse_payout_request({"amount_usd": None}) is None


def test_a_payout_request_amount_is_read_exactly() -> None:
    assert parse_payout_request({"amount_usd": "12.34"}) == 12_340_000


@pytest.mark.parametrize("amount", ["12.345", "0.000001", "1.0000001"])
def test_a_payout_request_amount_must_be_whole_cents(amount: str) -> None:
    with pytest.raises(InvalidBillingInput) as caught:
        parse_payout_request({"amount_usd": amount})
    assert caught.value.param == "amount_usd"


@pytest.mark.parametrize("amount", ["0", "-5.00", "abc", 12.5, 10, True, "1e3"])
def test_a_payout_request_amount_must_be_a_positive_decimal_string(amount: object) -> None:
    with pytest.raises(InvalidBillingInput):
        parse_payout_request({"amount_usd": amount})


def test_a_payout_request_with_an_unknown_field_is_refused() -> None:
    with pytest.raises(InvalidBillingInput) as caught:
        parse_payout_request({"amount_usd": "20.00", "destination": "acct_evil123"})
    assert caught.value.param == "destination"


def test_a_payout_request_must_be_an_object() -> None:
    with pytest.raises(InvalidBillingInput):
        parse_payout_request(["20.00"])


def test_a_stripe_account_id_of_the_connect_shape_is_accepted() -> None:
    assert parse_stripe_account({"stripe_account_id": "acct_1032D82eZvKYlo2C"}) == "acct_1032D82eZvKYlo2C"


@pytest.mark.parametrize(
    "value", ["acct_", "acct_abc", "cus_1032D82eZvKYlo2C", "acct_1032D82e/../x", "acct_1032D82e ", None, 12, ""]
)
def test_a_stripe_account_id_of_another_shape_is_refused(value: object) -> None:
    with pytest.raises(InvalidBillingInput) as caught:
        parse_stripe_account({"stripe_account_id": value})
    assert caught.value.param == "stripe_account_id"


def test_a_reference_is_trimmed() -> None:
    assert parse_reference({"reference": "  SEPA 2024-001 "}) == "SEPA 2024-001"


@pytest.mark.parametrize("value", ["", "   ", None, 5, "x" * 201, "line\nbreak"])
def test_a_reference_must_be_short_printable_text(value: object) -> None:
    with pytest.raises(InvalidBillingInput) as caught:
        parse_reference({"reference": value})
    assert caught.value.param == "reference"


def test_a_payout_id_that_is_not_a_uuid_is_simply_not_found() -> None:
    with pytest.raises(BillingNotFound):
        _id("../../etc")


# ---- the holding period --------------------------------------------------------------------------


def test_earnings_of_the_holding_period_are_held_and_the_rest_is_available() -> None:
    split = split_earnings(50 * USD, 18 * USD, NOW - timedelta(days=2), 7)
    assert (split.holding_micro, split.available_micro) == (18 * USD, 32 * USD)
    assert split.next_release == NOW + timedelta(days=5)


def test_holding_never_exceeds_the_balance_so_available_is_never_negative() -> None:
    split = split_earnings(10 * USD, 18 * USD, NOW, 7)
    assert (split.holding_micro, split.available_micro) == (10 * USD, 0)


def test_nothing_held_means_everything_is_available_and_nothing_is_due() -> None:
    split = split_earnings(10 * USD, 0, None, 7)
    assert (split.holding_micro, split.available_micro, split.next_release) == (0, 10 * USD, None)


def test_a_negative_balance_holds_nothing() -> None:
    assert split_earnings(-5, 18 * USD, NOW, 7).holding_micro == 0


def test_the_holding_period_starts_its_days_before_now_and_zero_days_is_none() -> None:
    assert hold_start(NOW, 7) == NOW - timedelta(days=7)
    assert hold_start(NOW, 0) is None


def test_a_refusal_names_what_is_still_in_the_holding_period() -> None:
    with pytest.raises(Conflict) as caught:
        decide_amount(None, 0, MIN, holding_micro=27 * USD)
    assert "27.000000 USD more is in the holding period" in caught.value.message


# ---- approval and replays ------------------------------------------------------------------------


def test_the_approval_setting_becomes_micro_usd() -> None:
    assert approval_micro(Decimal("1000")) == 1_000 * USD


def test_only_a_payout_above_the_approval_amount_needs_approval() -> None:
    assert needs_approval(1_000 * USD + 10_000, 1_000 * USD)
    assert not needs_approval(1_000 * USD, 1_000 * USD)
    assert needs_approval(10 * USD, 0)  # 0: every payout


def test_only_a_pending_payout_awaiting_approval_can_be_approved() -> None:
    check_approvable("pending", True, None)
    for status, required, approved_at in (
        ("pending", False, None),
        ("pending", True, NOW),
        ("cancelled", True, None),
        ("paid", True, NOW),
    ):
        with pytest.raises(Conflict):
            check_approvable(status, required, approved_at)


def test_a_request_for_everything_is_recorded_apart_from_any_amount() -> None:
    assert requested_value(None) == EVERYTHING
    assert requested_value(12 * USD) == 12 * USD != EVERYTHING


def test_a_replay_with_the_same_request_passes_and_with_another_is_a_conflict_on_the_key() -> None:
    check_replay(requested_value(10 * USD), 10 * USD)
    check_replay(requested_value(None), None)
    for stored, asked in ((10 * USD, 12 * USD), (10 * USD, None), (EVERYTHING, 10 * USD)):
        with pytest.raises(Conflict) as caught:
            check_replay(stored, asked)
        assert caught.value.param == "Idempotency-Key"


def test_a_payout_from_before_requests_were_recorded_replays_as_before() -> None:
    check_replay(None, 12 * USD)


def test_the_payout_controls_default_to_a_week_and_a_thousand_usd() -> None:
    settings = load_settings(GATEWAY_SECRET_KEY="x" * 32)
    assert (settings.earnings_hold_days, settings.payout_approval_usd) == (7, Decimal("1000"))


# ---- states and weeks ----------------------------------------------------------------------------


def test_only_a_pending_payout_may_change() -> None:
    check_pending("pending", "cancelled")
    for status in ("paid", "failed", "cancelled"):
        with pytest.raises(Conflict):
            check_pending(status, "cancelled")


def test_the_iso_week_is_taken_in_utc() -> None:
    assert iso_week(NOW) == "2024-W11"
    # Sunday 23:30 in New York (UTC-4) is already Monday in UTC: the next week.
    assert iso_week(datetime(2024, 3, 17, 23, 30, tzinfo=timezone(timedelta(hours=-4)))) == "2024-W12"


def test_the_iso_week_year_can_differ_from_the_calendar_year() -> None:
    assert iso_week(datetime(2024, 12, 30, tzinfo=UTC)) == "2025-W01"
    assert iso_week(datetime(2021, 1, 3, tzinfo=UTC)) == "2020-W53"


def test_the_run_key_names_the_seller_and_the_week() -> None:
    assert run_key("s1", "2024-W11") == "payout-run:s1:2024-W11"


def test_a_sellers_idempotency_key_is_scoped_to_that_seller() -> None:
    assert request_key("s1", "abc") != request_key("s2", "abc")
    assert request_key("s1", None) is None


def test_an_idempotency_key_must_be_short_and_printable() -> None:
    for bad in ("", "x" * 201, "a\x00b"):
        with pytest.raises(InvalidBillingInput):
            request_key("s1", bad)


# ---- the earnings window -------------------------------------------------------------------------


def test_the_earnings_window_defaults_to_the_last_thirty_days() -> None:
    assert earnings_window(None, None, NOW) == (NOW - timedelta(days=30), NOW)


def test_the_earnings_window_ends_at_until_when_only_until_is_given() -> None:
    until = NOW - timedelta(days=100)
    assert earnings_window(None, until, NOW) == (until - timedelta(days=30), until)


def test_the_earnings_window_must_not_be_empty() -> None:
    with pytest.raises(InvalidBillingInput):
        earnings_window(NOW, NOW, NOW)


def test_the_earnings_window_spans_at_most_a_year() -> None:
    with pytest.raises(InvalidBillingInput):
        earnings_window(NOW - timedelta(days=367), NOW, NOW)


# ---- the Stripe transfer call --------------------------------------------------------------------


def stripe_answering(status: int, body: Any, seen: list[httpx.Request]) -> Callable[[], Any]:
    settings = load_settings(
        GATEWAY_SECRET_KEY="k" * 32, STRIPE_SECRET_KEY="sk_test_secret_value", STRIPE_API_BASE="https://stripe.test"
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, content=orjson.dumps(body))

    return lambda: StripeClient.open(settings, transport=httpx.MockTransport(handler))


async def create(opener: Callable[[], Any]) -> StripeTransfer | TransferRefused:
    async with opener() as stripe:
        answer: StripeTransfer | TransferRefused = await stripe.create_transfer(
            amount_cents=2512,
            currency="usd",
            destination="acct_1032D82eZvKYlo2C",
            metadata={"payout_id": "p1"},
            idempotency_key="payout-p1",
        )
        return answer


async def test_a_transfer_posts_cents_destination_metadata_and_the_idempotency_key() -> None:
    seen: list[httpx.Request] = []
    body = {"id": "tr_123", "amount": 2512, "currency": "usd", "destination": "acct_1032D82eZvKYlo2C"}
    answer = await create(stripe_answering(200, body, seen))
    assert answer == StripeTransfer("tr_123", 2512, "usd", "acct_1032D82eZvKYlo2C")
    [request] = seen
    assert (request.method, request.url.path) == ("POST", "/v1/transfers")
    assert request.headers["idempotency-key"] == "payout-p1"
    assert dict(parse_qsl(request.content.decode())) == {
        "amount": "2512",
        "currency": "usd",
        "destination": "acct_1032D82eZvKYlo2C",
        "metadata[payout_id]": "p1",
    }


@pytest.mark.parametrize("status", [400, 402, 403, 404])
async def test_a_transfer_stripe_refuses_is_a_refusal_with_its_message(status: int) -> None:
    answer = await create(stripe_answering(status, {"error": {"message": "No such destination"}}, []))
    assert answer == TransferRefused(status, "No such destination")


@pytest.mark.parametrize("status", [401, 409, 429, 500, 503])
async def test_a_transfer_answer_that_may_change_on_retry_is_unavailable(status: int) -> None:
    with pytest.raises(PaymentsUnavailable):
        await create(stripe_answering(status, {"error": {"message": "try later"}}, []))


async def test_a_refusal_message_never_carries_the_secret_key() -> None:
    answer = await create(stripe_answering(400, {"error": {"message": "bad key sk_test_secret_value"}}, []))
    assert isinstance(answer, TransferRefused)
    assert "sk_test_secret_value" not in answer.message


async def test_a_transfer_answered_in_an_unexpected_shape_is_unavailable() -> None:
    with pytest.raises(PaymentsUnavailable):
        await create(stripe_answering(200, {"id": "tr_1"}, []))
