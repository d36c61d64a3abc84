"""Session keys as pure rules: the derived secret, and how long a cache may trust one."""

from __future__ import annotations

from aichat_gateway.accounts.keycache import backdated
from aichat_gateway.accounts.keyformat import looks_like_key
from aichat_gateway.accounts.revocable import is_fresh
from aichat_gateway.accounts.sessionkeys import derive_secret
from aichat_gateway.accounts.tokens import derive_key

KEY = derive_key("a-test-master-secret-of-32-characters!", "session-key")


def test_a_session_key_has_the_shape_of_every_gateway_key() -> None:
    assert looks_like_key(derive_secret(KEY, "token-id-1"))


def test_the_same_session_always_gets_the_same_key() -> None:
    assert derive_secret(KEY, "token-id-1") == derive_secret(KEY, "token-id-1")


def test_two_sessions_get_different_keys() -> None:
    assert derive_secret(KEY, "token-id-1") != derive_secret(KEY, "token-id-2")


def test_another_master_secret_derives_another_key() -> None:
    other = derive_key("another-master-secret-of-32-characters", "session-key")
    assert derive_secret(KEY, "token-id-1") != derive_secret(other, "token-id-1")


def test_a_key_with_longer_to_live_than_the_ttl_is_stored_now() -> None:
    assert backdated(now=100.0, seconds_left=3600.0, ttl=30.0) == 100.0


def test_a_key_about_to_expire_goes_stale_when_its_session_does() -> None:
    stored_at = backdated(now=100.0, seconds_left=5.0, ttl=30.0)
    assert is_fresh(stored_at, 104.9, 30.0)
    assert not is_fresh(stored_at, 105.0, 30.0)


def test_an_expired_key_is_stale_at_once() -> None:
    assert not is_fresh(backdated(now=100.0, seconds_left=-1.0, ttl=30.0), 100.0, 30.0)
