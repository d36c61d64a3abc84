"""The audit trail stores a client address only when it is one (the column is `inet`)."""

from __future__ import annotations

from aichat_gateway.audittrail import inet


def test_an_ipv4_or_ipv6_address_is_stored_as_it_is() -> None:
    assert inet("203.0.113.7") == "203.0.113.7"
    assert inet("2001:db8::1") == "2001:db8::1"


def test_anything_else_is_stored_as_no_address() -> None:
    assert inet("testclient") is None
    assert inet("/run/gateway.sock") is None
    assert inet(None) is None
