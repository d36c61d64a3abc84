"""E-mail addresses: the one rule for which are accepted and when two spellings are the same address.

Every place that takes an address from outside (registration, login, the login limiter, every
look-up by e-mail, `create-admin`, the admin's credits) goes through `parse_email`, and every
comparison uses its `canonical` form: stripped of ASCII whitespace and with ASCII letters
lower-cased. Nothing else is lower-cased, because nothing else is accepted: Python and Postgres
fold the rest of Unicode differently (Python lowers "İ" to "i" + U+0307, Postgres to "i" or
leaves it, by collation; the Kelvin sign folds to "k"; "ß" upper-cases to "SS"), and a limiter
that counts one spelling while the account look-up finds another is a lockout bypass. So an
address must be plain ASCII in a simple shape, and anything else is refused before it is counted
or looked up; the refusal depends only on the text, so it tells nothing about accounts.

Shared by accounts and billing (which may not import each other's errors), so it raises nothing:
each caller turns None into its own "invalid e-mail" error.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass

MAX_EMAIL_CHARS = 320
# Only ASCII whitespace is stripped: str.strip() would also drop NBSP, U+3000 and friends, and an
# address given with them is as unusual as any other non-ASCII one.
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# Deliberately simple: RFC 5322 "atext" local part, dotted LDH domain, ASCII only (no IGNORECASE
# flag: under it `[a-z]` also matches the Kelvin sign). Deliverability is not something a regex can
# know; this only keeps out garbage, whitespace, control characters and look-alikes.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]{{1,64}}@{_LABEL}(?:\.{_LABEL})+")


@dataclass(frozen=True, slots=True)
class EmailAddress:
    shown: str  # as given, stripped: what is stored and shown back
    canonical: str  # what every comparison and the login limiter use


def parse_email(value: object) -> EmailAddress | None:
    """Pure: the address in `value`, or None if it is not one we accept."""
    if not isinstance(value, str):
        return None
    shown = value.strip(_ASCII_SPACE)
    if not shown or len(shown) > MAX_EMAIL_CHARS or not shown.isascii() or not _EMAIL.fullmatch(shown):
        return None
    return EmailAddress(shown=shown, canonical=shown.translate(_ASCII_LOWER))


def canonical_email(value: object) -> str | None:
    """Pure: `parse_email(value).canonical`, or None if it is not an address we accept."""
    address = parse_email(value)
    return address.canonical if address is not None else None
