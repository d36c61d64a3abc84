"""The admin console's and the audit trail's pure rules."""

from __future__ import annotations

import pytest

from aichat_gateway import audittrail
from aichat_gateway.accounts.admin_api import EVENTS_PAGE, EventQuery, event_query
from aichat_gateway.accounts.errors import Forbidden, InvalidInput
from aichat_gateway.accounts.useradmin import MAX_QUERY_CHARS, Change, check_change, search_pattern
from aichat_gateway.dashboard.activity_pages import older_link
from aichat_gateway.dashboard.admin_pages import tabs
from aichat_gateway.marketplace.errors import InvalidListing
from aichat_gateway.marketplace.moderation import moderation

ADMIN = "11111111-1111-1111-1111-111111111111"
OTHER = "22222222-2222-2222-2222-222222222222"

# ---- searching accounts -------------------------------------------------------------------------


def test_a_search_matches_any_part_of_the_address_in_lower_case() -> None:
    assert search_pattern("  Bob@Example ") == "%bob@example%"


def test_like_wildcards_and_the_escape_character_are_matched_literally() -> None:
    assert search_pattern("a%b_c\\d") == "%a\\%b\\_c\\\\d%"


def test_a_search_with_nul_is_refused() -> None:
    with pytest.raises(InvalidInput):
        search_pattern("a\x00b")


def test_an_empty_search_matches_every_account() -> None:
    assert search_pattern("") == "%%"


def test_a_search_longer_than_an_address_is_refused() -> None:
    with pytest.raises(InvalidInput) as refused:
        search_pattern("a" * (MAX_QUERY_CHARS + 1))
    assert refused.value.param == "query"


# ---- changing accounts --------------------------------------------------------------------------


def test_an_admin_may_disable_and_promote_another_account() -> None:
    check_change(ADMIN, OTHER, Change(role="admin", disabled=True))


def test_a_change_of_nothing_is_refused() -> None:
    with pytest.raises(InvalidInput):
        check_change(ADMIN, OTHER, Change())


def test_an_unknown_role_is_refused_naming_role() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_change(ADMIN, OTHER, Change(role="owner"))
    assert refused.value.param == "role"


def test_an_admin_cannot_disable_their_own_account() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_change(ADMIN, ADMIN, Change(disabled=True))
    assert refused.value.param == "disabled"


def test_an_admin_cannot_demote_themselves_but_may_enable_and_keep_admin() -> None:
    with pytest.raises(InvalidInput):
        check_change(ADMIN, ADMIN, Change(role="user"))
    check_change(ADMIN, ADMIN, Change(role="admin", disabled=False))


# ---- the audit trail's query --------------------------------------------------------------------


def test_no_parameters_mean_the_callers_newest_events() -> None:
    assert event_query({}, is_admin=False) == EventQuery(everyone=False, limit=EVENTS_PAGE)


def test_an_admin_may_ask_for_everyones_events_of_a_kind_before_an_id() -> None:
    asked = event_query({"all": "1", "action": "admin.", "before_id": "42", "limit": "10"}, is_admin=True)
    assert asked == EventQuery(everyone=True, action_prefix="admin.", before_id=42, limit=10)


def test_a_user_asking_for_everyones_events_is_forbidden() -> None:
    with pytest.raises(Forbidden):
        event_query({"all": "1"}, is_admin=False)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("before_id", "-1"),
        ("before_id", "1e3"),
        ("before_id", "\u00b2"),
        ("limit", "0"),
        ("limit", "201"),
        ("action", "Login"),
        ("action", "a.b.c"),
        ("all", "2"),
    ],
)
def test_a_malformed_parameter_is_refused_naming_it(name: str, value: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        event_query({name: value}, is_admin=True)
    assert refused.value.param == name


def test_the_older_link_keeps_the_filters_and_drops_anything_else() -> None:
    link = older_link({"all": "1", "action": "key.", "before_id": "99", "evil": "x"}, 50)
    assert link == "/app/activity?all=1&action=key.&before_id=50"


def test_there_is_no_older_link_on_the_last_page() -> None:
    assert older_link({"action": "key."}, None) is None


# ---- the console's tabs and listing moderation --------------------------------------------------


def test_the_tab_holding_the_page_is_current() -> None:
    current = [t["label"] for t in tabs("/app/admin/payouts/abc") if t["current"]]
    assert current == ["Payouts"]
    assert [t["label"] for t in tabs("/app/admin/users/abc") if t["current"]] == ["Users"]


def test_disabling_a_listing_needs_a_reason() -> None:
    with pytest.raises(InvalidListing) as refused:
        moderation("disabled", "   ")
    assert refused.value.param == "status_reason"


def test_disabling_keeps_the_reason_and_enabling_clears_it() -> None:
    assert (moderation("disabled", " spam ").status, moderation("disabled", " spam ").status_reason) == (
        "disabled",
        "spam",
    )
    enabled = moderation("active", "ignored")
    assert (enabled.status, enabled.status_reason) == ("active", None)


def test_a_moderation_status_other_than_active_or_disabled_is_refused() -> None:
    with pytest.raises(InvalidListing) as refused:
        moderation("paused", "x")
    assert refused.value.param == "status"


# ---- the audit trail's addresses ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seen", "kept"), [("203.0.113.7", "203.0.113.7"), ("::1", "::1"), ("2001:DB8::1", "2001:db8::1")]
)
def test_an_ip_address_is_kept_as_postgres_writes_it(seen: str, kept: str) -> None:
    assert audittrail.inet(seen) == kept


@pytest.mark.parametrize("seen", [None, "", "testclient", "203.0.113.185-3a3dbe", "unix:/tmp/sock"])
def test_a_client_address_that_is_no_ip_is_not_kept(seen: str | None) -> None:
    assert audittrail.inet(seen) is None
