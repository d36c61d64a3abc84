"""The audit trail stores a client address only when it is one (the column is `inet`)."""

from __future__ import annotations

from aichat_gateway.audittrail import stored_ip


def test_an_ipv4_or_ipv6_address_is_stored_as_it_is() -> None:
    assert stored_ip("203.0.113.7") == "203.0.113.7"
    assert stored_ip("2001:db8::1") == "2001:db8::1"


def test_anything_else_is_stored_as_no_address() -> None:
    assert stored_ip("testclient") is None
    assert stored_ip("/run/gateway.sock") is None
    assert stored_ip(None) is None
