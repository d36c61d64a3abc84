"""The key pages' form as pure functions: fields to the API body, a key back to fields, errors to fields."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from aichat_gateway.accounts.keys import ApiKey
from aichat_gateway.accounts.keysettings import KeySettings
from aichat_gateway.dashboard.keyforms import body_of, field_of, routing_of, values_of, when
from aichat_gateway.dashboard.quickstart import snippets

FALLBACKS_ON = {"allow_fallbacks": "on"}


def test_an_empty_settings_form_means_no_routing_defaults() -> None:
    assert routing_of(FALLBACKS_ON) is None


def test_unticking_fallbacks_is_the_only_way_it_is_written() -> None:
    assert routing_of({}) == {"allow_fallbacks": False}


def test_sort_and_price_ceilings_become_the_routing_object() -> None:
    values = {**FALLBACKS_ON, "sort": "price", "max_prompt_price": " 0.5 ", "max_completion_price": ""}
    assert routing_of(values) == {"sort": "price", "max_price": {"prompt": "0.5"}}


def test_routing_fields_the_form_does_not_show_are_kept_when_editing() -> None:
    kept = {"only": ["lst_a"], "sort": "latency", "max_price": {"prompt": "1"}}
    assert routing_of(FALLBACKS_ON, kept) == {"only": ["lst_a"]}


def test_blank_caps_are_no_caps() -> None:
    body = body_of({"name": "ci", "daily_spend_cap_usd": " ", **FALLBACKS_ON})
    assert body == {"name": "ci", "routing": None, "daily_spend_cap_usd": None, "monthly_spend_cap_usd": None}


def test_a_key_fills_the_form_as_it_is() -> None:
    key = ApiKey(
        id="k",
        name="laptop",
        prefix="agw-abc",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        last_used_at=None,
        revoked_at=None,
        settings=KeySettings(
            routing={"sort": "price", "max_price": {"completion": "2"}, "allow_fallbacks": False},
            daily_cap_micro=3_000_000,
        ),
    )
    assert values_of(key) == {
        "name": "laptop",
        "sort": "price",
        "max_prompt_price": "",
        "max_completion_price": "2",
        "allow_fallbacks": "",
        "daily_spend_cap_usd": "3.000000",
        "monthly_spend_cap_usd": "",
    }


def test_routing_errors_are_shown_next_to_their_form_field() -> None:
    assert field_of("routing.max_price.completion") == "max_completion_price"
    assert field_of("daily_spend_cap_usd") == "daily_spend_cap_usd"
    assert field_of("routing.order") is None


def test_times_are_shown_in_utc_to_the_minute() -> None:
    paris = timezone(timedelta(hours=1))
    assert when(datetime(2026, 5, 1, 13, 30, 59, tzinfo=paris)) == "2026-05-01 12:30 UTC"
    assert when(None) == "never"


def test_the_quickstart_right_after_creation_holds_the_key() -> None:
    found = snippets("http://gw.test/v1", "agw-secret")
    assert [s.title for s in found] == ["curl", "Python (openai)", "JavaScript (openai)"]
    assert all("agw-secret" in s.code and "http://gw.test/v1" in s.code for s in found)


def test_the_quickstart_afterwards_reads_the_key_from_the_environment() -> None:
    found = snippets("http://gw.test/v1", None)
    assert all("AICHAT_API_KEY" in s.code and "agw-" not in s.code for s in found)
