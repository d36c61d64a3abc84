"""Session JWTs: signing, verification, expiry (injected clock), rotation and purpose separation."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from aichat_gateway.accounts.errors import InvalidCredentials
from aichat_gateway.accounts.tokens import JWT_PURPOSE, SessionTokens, check_times, derive_key

OLD = "old-master-key-" + "o" * 32
NEW = "new-master-key-" + "n" * 32
NOW = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def tokens(*keys: str, clock: Clock | None = None, ttl: int = 3600) -> SessionTokens:
    return SessionTokens(keys or (NEW,), ttl, clock=clock or Clock())


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def test_an_issued_token_decodes_to_the_same_user_and_role() -> None:
    issued = tokens().issue("user-1", "admin")
    claims = tokens().decode(issued.token)
    assert (claims.user_id, claims.role) == ("user-1", "admin")


def test_an_issued_token_carries_iat_exp_and_a_unique_jti() -> None:
    t = tokens(ttl=600)
    first, second = t.issue("u", "user"), t.issue("u", "user")
    payload = jwt.decode(first.token, options={"verify_signature": False})
    assert payload["iat"] == int(NOW) and payload["exp"] == int(NOW) + 600
    assert first.claims.token_id != second.claims.token_id


def test_expires_in_is_the_configured_ttl() -> None:
    assert tokens(ttl=900).issue("u", "user").expires_in == 900


def test_a_token_is_refused_once_its_expiry_has_passed() -> None:
    clock = Clock()
    t = tokens(clock=clock, ttl=60)
    token = t.issue("u", "user").token
    clock.now = NOW + 60
    with pytest.raises(InvalidCredentials):
        t.decode(token)


def test_a_token_is_accepted_just_before_its_expiry() -> None:
    clock = Clock()
    t = tokens(clock=clock, ttl=60)
    token = t.issue("u", "user").token
    clock.now = NOW + 59
    assert t.decode(token).user_id == "u"


def test_a_token_issued_in_the_future_beyond_the_skew_allowance_is_refused() -> None:
    token = tokens(clock=Clock(NOW + 3600)).issue("u", "user").token
    with pytest.raises(InvalidCredentials):
        tokens().decode(token)


def test_a_token_with_a_tampered_payload_is_refused() -> None:
    header, _, signature = tokens().issue("u", "user").token.split(".")
    forged = _b64({"sub": "u", "role": "admin", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "x"})
    with pytest.raises(InvalidCredentials):
        tokens().decode(f"{header}.{forged}.{signature}")


def test_a_token_with_a_tampered_signature_is_refused() -> None:
    token = tokens().issue("u", "user").token
    head, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    with pytest.raises(InvalidCredentials):
        tokens().decode(f"{head}.{payload}.{flipped}")


def test_an_unsigned_alg_none_token_is_refused() -> None:
    payload = {"sub": "u", "role": "admin", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "x"}
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."
    with pytest.raises(InvalidCredentials):
        tokens().decode(unsigned)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_a_token_signed_with_another_hmac_algorithm_and_the_right_key_is_refused() -> None:
    payload = {"sub": "u", "role": "user", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "x"}
    token = jwt.encode(payload, derive_key(NEW, JWT_PURPOSE), algorithm="HS512")
    with pytest.raises(InvalidCredentials):
        tokens().decode(token)


def test_a_token_signed_with_the_raw_master_key_is_refused() -> None:
    payload = {"sub": "u", "role": "user", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "x"}
    with pytest.raises(InvalidCredentials):
        tokens().decode(jwt.encode(payload, NEW.encode(), algorithm="HS256"))


def test_a_token_signed_with_a_key_derived_for_another_purpose_is_refused() -> None:
    other = SessionTokens([NEW], 3600, clock=Clock(), purpose="provider-vault")
    with pytest.raises(InvalidCredentials):
        tokens().decode(other.issue("u", "admin").token)


def test_a_token_signed_with_a_rotated_out_key_is_valid_while_that_key_is_listed() -> None:
    old_token = tokens(OLD).issue("u", "user").token
    assert tokens(NEW, OLD).decode(old_token).user_id == "u"


def test_a_token_signed_with_a_key_no_longer_listed_is_refused() -> None:
    old_token = tokens(OLD).issue("u", "user").token
    with pytest.raises(InvalidCredentials):
        tokens(NEW).decode(old_token)


def test_new_tokens_are_signed_with_the_first_listed_key() -> None:
    token = tokens(NEW, OLD).issue("u", "user").token
    assert tokens(NEW).decode(token).user_id == "u"


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "jti"])
def test_a_validly_signed_token_missing_a_required_claim_is_refused(missing: str) -> None:
    payload = {"sub": "u", "role": "user", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "x"}
    del payload[missing]
    with pytest.raises(InvalidCredentials):
        tokens().decode(jwt.encode(payload, derive_key(NEW, JWT_PURPOSE), algorithm="HS256"))


def test_a_validly_signed_token_with_an_unknown_role_is_refused() -> None:
    payload = {"sub": "u", "role": "root", "iat": int(NOW), "exp": int(NOW) + 60, "jti": "x"}
    with pytest.raises(InvalidCredentials):
        tokens().decode(jwt.encode(payload, derive_key(NEW, JWT_PURPOSE), algorithm="HS256"))


def test_garbage_and_oversized_tokens_are_refused() -> None:
    for garbage in ("", "abc", "a.b.c", "x" * 5000):
        with pytest.raises(InvalidCredentials):
            tokens().decode(garbage)


def test_check_times_refuses_an_expiry_not_after_issue() -> None:
    with pytest.raises(InvalidCredentials):
        check_times(issued_at=100, expires_at=100, now=50)


def test_the_csrf_token_matches_its_own_session() -> None:
    issued = tokens().issue("u", "user")
    assert tokens().csrf_matches(issued.claims, issued.csrf_token)


def test_the_csrf_token_of_one_session_does_not_match_another() -> None:
    t = tokens()
    first, second = t.issue("u", "user"), t.issue("u", "user")
    assert not t.csrf_matches(second.claims, first.csrf_token)


def test_derived_keys_differ_by_purpose_and_by_master() -> None:
    assert derive_key(NEW, "a") != derive_key(NEW, "b")
    assert derive_key(NEW, "a") != derive_key(OLD, "a")
    assert len(derive_key(NEW, "a")) == 32
