"""A listing PATCH's status must be one of the allowed words, whatever JSON type it arrives as."""

from __future__ import annotations

import pytest

from aichat_gateway.config.catalog import load_catalog
from aichat_gateway.marketplace.changes import parse_changes
from aichat_gateway.marketplace.errors import InvalidListing


@pytest.mark.parametrize("status", [[], {}, 1, True, ["active"]])
def test_a_status_that_is_not_a_string_is_a_400_naming_status(status: object) -> None:
    with pytest.raises(InvalidListing) as caught:
        parse_changes(
            {"status": status}, is_admin=True, current_status="active", models=["gpt-4o-mini"], catalog=load_catalog()
        )
    assert caught.value.param == "status"
