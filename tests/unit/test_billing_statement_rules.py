"""The billing pages' pure rules: statement date ranges, filter links, the CSV, the live
balance's key and when card top-ups are on."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from pydantic import SecretStr

from aichat_gateway.billing.balances import Balance
from aichat_gateway.billing.statements import Transaction, transactions_csv
from aichat_gateway.config.settings import load_settings
from aichat_gateway.dashboard.billing_pages import balance_context, topups_enabled
from aichat_gateway.dashboard.statement_pages import DateRange, csv_link, day_range, link

T = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


def test_a_day_range_includes_the_whole_last_day() -> None:
    found = day_range("2026-03-01", "2026-03-31")
    assert (found.since, found.until) == (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


def test_empty_dates_leave_the_range_open() -> None:
    found = day_range("", " ")
    assert (found.since, found.until, found.errors) == (None, None, {})


def test_a_date_that_is_not_yyyy_mm_dd_is_a_problem_of_its_field() -> None:
    found = day_range("03/01/2026", "2026-02-30")
    assert set(found.errors) == {"since", "until"}
    assert (found.since, found.until) == (None, None)


def test_an_end_before_the_start_is_a_problem_of_the_end() -> None:
    assert day_range("2026-03-10", "2026-03-09").errors == {"until": "The end date is before the start date."}


def test_a_link_keeps_only_the_filters_that_are_set() -> None:
    assert link("/p", {"kind": "topup", "since": "", "before": "7"}) == "/p?kind=topup&before=7"
    assert link("/p", {"kind": ""}) == "/p"


def test_the_csv_link_sends_the_day_after_the_last_day_as_the_apis_exclusive_until() -> None:
    days = DateRange(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    assert csv_link("usage", days) == "/api/billing/transactions.csv?kind=usage&since=2026-03-01&until=2026-04-01"


def test_the_csv_has_the_apis_field_names_and_decimal_amounts() -> None:
    rows = [Transaction(7, "topup", 10_000_000, 12_500_000, T, "topup")]
    parsed = list(csv.reader(io.StringIO(transactions_csv(rows))))
    assert parsed == [
        ["id", "created_at", "type", "description", "amount_usd", "balance_after_usd"],
        ["7", "2026-03-10T12:30:00Z", "topup", "topup", "10.000000", "12.500000"],
    ]


def test_a_csv_cell_a_spreadsheet_would_run_as_a_formula_is_defused() -> None:
    rows = [Transaction(1, "credit", -5, -5, T, '=HYPERLINK("http://x")')]
    parsed = list(csv.reader(io.StringIO(transactions_csv(rows))))
    assert parsed[1][3] == '\'=HYPERLINK("http://x")' and parsed[1][4] == "-0.000005"


def test_the_live_balance_key_changes_with_the_balance_or_the_holds() -> None:
    keys = {balance_context(b)["balance_key"] for b in (Balance(5, 0, 5), Balance(5, 1, 4), Balance(6, 0, 6))}
    assert len(keys) == 3


def test_card_top_ups_need_both_stripe_keys() -> None:
    base = load_settings(GATEWAY_SECRET_KEY="x" * 40)
    secret = SecretStr("sk_test_" + "x" * 24)
    assert not topups_enabled(base)
    assert not topups_enabled(base.model_copy(update={"stripe_secret_key": secret}))
    assert topups_enabled(base.model_copy(update={"stripe_secret_key": secret, "stripe_publishable_key": "pk_test_1"}))
