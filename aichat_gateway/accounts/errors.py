"""Errors of the accounts package. The HTTP edge (proxy/edge.py) maps each class to a status once.

AccountsError
├── InvalidInput          the request's fields are malformed (message says which)
│   └── WrongPassword     a password change whose current password is wrong (400, not 401: the session is fine)
├── EmailTaken            registration with an e-mail that already has an account
├── InvalidCredentials    wrong e-mail/password, or a bad/expired session token
│   └── AccountDisabled   the right password of an account an admin disabled
├── Forbidden             authenticated but not allowed (role, CSRF)
├── NotFound              no such object *for this owner* (others' objects look absent too)
├── TooManyAttempts       login rate limit hit; `retry_after` seconds
└── StoreUnavailable      Postgres cannot be reached and nothing cached can answer
"""

from __future__ import annotations


class AccountsError(Exception):
    code = "accounts_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidInput(AccountsError):
    code = "invalid_input"


class WrongPassword(InvalidInput):
    code = "wrong_password"


class EmailTaken(AccountsError):
    code = "email_taken"


class InvalidCredentials(AccountsError):
    code = "invalid_credentials"


class AccountDisabled(InvalidCredentials):
    code = "account_disabled"


class Forbidden(AccountsError):
    code = "forbidden"


class NotFound(AccountsError):
    code = "not_found"


class TooManyAttempts(AccountsError):
    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class StoreUnavailable(AccountsError):
    code = "service_unavailable"
