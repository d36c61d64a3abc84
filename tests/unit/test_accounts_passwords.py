"""Password policy and argon2id hashing (CPU only, no I/O)."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from aichat_gateway.accounts.errors import InvalidInput
from aichat_gateway.accounts.passwords import Passwords, check_password_policy


def test_a_password_of_eight_characters_is_accepted() -> None:
    assert check_password_policy("12345678") == "12345678"


def test_a_password_of_256_characters_is_accepted() -> None:
    assert check_password_policy("p" * 256) == "p" * 256


def test_a_password_shorter_than_eight_characters_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_password_policy("1234567")
    assert caught.value.param == "password"


def test_a_password_longer_than_256_characters_is_refused() -> None:
    with pytest.raises(InvalidInput):
        check_password_policy("p" * 257)


def test_a_password_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidInput):
        check_password_policy(12345678)


def test_the_refusal_message_never_contains_the_password() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_password_policy("short1")
    assert "short1" not in caught.value.message


async def test_a_hash_is_argon2id_and_verifies_the_same_password() -> None:
    passwords = Passwords()
    hashed = await passwords.hash("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert await passwords.verify(hashed, "correct horse battery")


async def test_a_different_password_does_not_verify() -> None:
    passwords = Passwords()
    hashed = await passwords.hash("correct horse battery")
    assert not await passwords.verify(hashed, "correct horse battery!")


def test_a_corrupt_stored_hash_does_not_verify_instead_of_raising() -> None:
    assert Passwords().verify_sync("not-a-hash", "whatever123") is False


def test_a_hash_made_with_weaker_parameters_needs_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash("password123")
    assert Passwords().needs_rehash(weak)


def test_a_hash_made_with_current_parameters_does_not_need_rehash() -> None:
    passwords = Passwords()
    assert not passwords.needs_rehash(passwords.hash_sync("password123"))
