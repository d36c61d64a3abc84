"""The users repository against real Postgres: creation, look-up, authentication, create-admin."""

from __future__ import annotations

import asyncpg
import pytest
from argon2 import PasswordHasher

from aichat_gateway.accounts import users
from aichat_gateway.accounts.errors import EmailTaken, InvalidCredentials, InvalidInput
from aichat_gateway.accounts.passwords import Passwords
from tests.support.emails import unique_email

PASSWORD = "correct horse battery"


@pytest.fixture
def passwords() -> Passwords:
    return Passwords()


async def test_a_created_user_is_found_by_email_in_any_case(db: asyncpg.Connection, passwords: Passwords) -> None:
    user = await users.create_user(db, passwords, unique_email(), PASSWORD)
    assert await users.get_by_email(db, user.email.upper()) == user


async def test_a_created_user_is_found_by_id(db: asyncpg.Connection, passwords: Passwords) -> None:
    user = await users.create_user(db, passwords, unique_email(), PASSWORD)
    assert await users.get_by_id(db, user.id) == user


async def test_looking_up_an_id_that_is_not_a_uuid_finds_nobody(db: asyncpg.Connection) -> None:
    assert await users.get_by_id(db, "1 OR 1=1") is None


async def test_the_password_is_stored_only_as_an_argon2id_hash(db: asyncpg.Connection, passwords: Passwords) -> None:
    user = await users.create_user(db, passwords, unique_email(), PASSWORD)
    stored = await db.fetchval("SELECT password_hash FROM users WHERE id = $1::uuid", user.id)
    assert stored.startswith("$argon2id$") and PASSWORD not in stored


async def test_an_email_taken_in_another_case_is_refused(db: asyncpg.Connection, passwords: Passwords) -> None:
    email = unique_email()
    await users.create_user(db, passwords, email, PASSWORD)
    with pytest.raises(EmailTaken):
        await users.create_user(db, passwords, email.upper(), PASSWORD)


async def test_a_malformed_email_is_refused_before_hashing(db: asyncpg.Connection, passwords: Passwords) -> None:
    with pytest.raises(InvalidInput):
        await users.create_user(db, passwords, "not an email", PASSWORD)


async def test_the_right_password_authenticates(db: asyncpg.Connection, passwords: Passwords) -> None:
    user = await users.create_user(db, passwords, unique_email(), PASSWORD)
    assert await users.authenticate(db, passwords, f" {user.email.upper()} ", PASSWORD) == user


async def test_a_wrong_password_does_not_authenticate(db: asyncpg.Connection, passwords: Passwords) -> None:
    user = await users.create_user(db, passwords, unique_email(), PASSWORD)
    with pytest.raises(InvalidCredentials):
        await users.authenticate(db, passwords, user.email, PASSWORD + "!")


async def test_an_unknown_email_does_not_authenticate(db: asyncpg.Connection, passwords: Passwords) -> None:
    for _ in range(2):  # the first call makes the dummy hash, the second verifies against it
        with pytest.raises(InvalidCredentials):
            await users.authenticate(db, passwords, unique_email("ghost"), PASSWORD)


async def test_a_hash_with_old_parameters_is_upgraded_on_login(db: asyncpg.Connection, passwords: Passwords) -> None:
    user = await users.create_user(db, passwords, unique_email(), PASSWORD)
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    await db.execute("UPDATE users SET password_hash = $2 WHERE id = $1::uuid", user.id, weak)
    await users.authenticate(db, passwords, user.email, PASSWORD)
    upgraded = await db.fetchval("SELECT password_hash FROM users WHERE id = $1::uuid", user.id)
    assert upgraded != weak and not passwords.needs_rehash(upgraded)


async def test_create_admin_creates_an_admin(db: asyncpg.Connection) -> None:
    admin = await users.create_admin(db, unique_email("admin"), PASSWORD)
    assert admin.role == "admin"


async def test_create_admin_promotes_an_existing_user_and_sets_the_new_password(
    db: asyncpg.Connection, passwords: Passwords
) -> None:
    user = await users.create_user(db, passwords, unique_email(), PASSWORD)
    admin = await users.create_admin(db, user.email.upper(), "a brand new password")
    assert (admin.id, admin.role) == (user.id, "admin")
    assert await users.authenticate(db, passwords, user.email, "a brand new password") == admin
    with pytest.raises(InvalidCredentials):
        await users.authenticate(db, passwords, user.email, PASSWORD)


async def test_create_admin_twice_leaves_one_account(db: asyncpg.Connection) -> None:
    email = unique_email("admin")
    first = await users.create_admin(db, email, PASSWORD)
    second = await users.create_admin(db, email, PASSWORD)
    assert first.id == second.id
    assert await db.fetchval("SELECT count(*) FROM users WHERE lower(email) = lower($1)", email) == 1


async def test_create_admin_applies_the_password_policy(db: asyncpg.Connection) -> None:
    with pytest.raises(InvalidInput):
        await users.create_admin(db, unique_email("admin"), "short")


async def test_looking_up_a_dotted_capital_i_lookalike_is_refused_not_matched(
    db: asyncpg.Connection, passwords: Passwords
) -> None:
    """Postgres' lower() turns "İ" into "i"; the look-up must not find `admin…` for `admİn…`."""
    user = await users.create_user(db, passwords, unique_email("admin"), PASSWORD)
    lookalike = user.email.replace("admin", "adm\u0130n", 1)
    with pytest.raises(InvalidInput):
        await users.get_by_email(db, lookalike)
    with pytest.raises(InvalidInput):
        await users.authenticate(db, passwords, lookalike, PASSWORD)


async def test_create_admin_refuses_a_lookalike_instead_of_resetting_the_real_account(
    db: asyncpg.Connection, passwords: Passwords
) -> None:
    user = await users.create_user(db, passwords, unique_email("admin"), PASSWORD)
    with pytest.raises(InvalidInput):
        await users.create_admin(db, user.email.replace("admin", "adm\u0130n", 1), "a brand new password")
    assert await users.authenticate(db, passwords, user.email, PASSWORD) == user
