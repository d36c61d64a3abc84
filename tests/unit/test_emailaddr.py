"""The one e-mail rule (aichat_gateway/emailaddr.py): which addresses are accepted, and their canonical form.

The canonical form is what the login limiter counts and what every look-up compares, so two
spellings that Python and Postgres fold differently must never both get through: anything that is
not plain ASCII is refused.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aichat_gateway.accounts.errors import InvalidInput
from aichat_gateway.accounts.users import canonical_email as accounts_canonical_email
from aichat_gateway.emailaddr import EmailAddress, canonical_email, parse_email


@pytest.mark.parametrize(
    "given, canonical",
    [
        ("admin@example.com", "admin@example.com"),
        ("Admin@Example.COM", "admin@example.com"),
        ("  ADMIN@EXAMPLE.COM\t", "admin@example.com"),
        ("a.b+tag@sub.example.org", "a.b+tag@sub.example.org"),
        ("O'Brien@Example.ie", "o'brien@example.ie"),
    ],
)
def test_ascii_spellings_of_one_address_share_one_canonical_form(given: str, canonical: str) -> None:
    assert canonical_email(given) == canonical


def test_the_shown_form_keeps_the_case_given_and_drops_surrounding_spaces() -> None:
    expected = EmailAddress(shown="Alice@Example.COM", canonical="alice@example.com")
    assert parse_email("  Alice@Example.COM \n") == expected


@pytest.mark.parametrize(
    "spoof",
    [
        "adm\u0130n@example.com",  # İ, capital I with dot: Python lowers it to "i" + U+0307, Postgres to "i"
        "adm\u0131n@example.com",  # dotless i: upper-cases to plain "I"
        "\u212aate@example.com",  # K, the Kelvin sign: lower-cases to plain "k"
        "\uff41dmin@example.com",  # fullwidth a: NFKC folds it to "a"
        "admin@\uff45xample.com",  # fullwidth e in the domain
        "stra\u00dfe@example.com",  # ß: upper-cases to "SS", casefolds to "ss"
        "admi\u0301n@example.com",  # combining acute accent
        "admin\u0307@example.com",  # combining dot above (what Python's lower() makes of İ)
        "adm\u00edn@example.com",  # í, precomposed
        "\u0430dmin@example.com",  # Cyrillic small a, a look-alike
        "admin@example.com\u200b",  # zero-width space
        "\u00a0admin@example.com",  # no-break space: not stripped, refused
        "admin@example.com\u3000",  # ideographic space
        "\ufb00@example.com",  # ﬀ ligature: casefolds to "ff"
    ],
)
def test_non_ascii_addresses_are_refused(spoof: str) -> None:
    assert parse_email(spoof) is None
    assert canonical_email(spoof) is None


@pytest.mark.parametrize(
    "email",
    [
        "",
        "   ",
        "alice",
        "alice@",
        "@example.com",
        "a b@example.com",
        "alice@example",
        "a@@b.co",
        "alice@exa mple.com",
        "alice\n@example.com",
        "alice@example.com\nbob@example.com",
        "alice@example.com\x00",
        "a\x00b@example.com",
        "x" * 65 + "@example.com",
        "a@" + ".".join(["l" * 63] * 5) + ".com",  # over 320 characters
        "alice@-example.com",
    ],
)
def test_malformed_addresses_are_refused(email: str) -> None:
    assert parse_email(email) is None


@pytest.mark.parametrize("value", [None, 42, b"alice@example.com", ["alice@example.com"]])
def test_a_value_that_is_not_a_string_is_refused(value: object) -> None:
    assert parse_email(value) is None


@given(st.text(max_size=40))
def test_whatever_is_accepted_is_ascii_and_its_own_canonical_form(text: str) -> None:
    canonical = canonical_email(text)
    if canonical is not None:
        assert canonical.isascii() and canonical == canonical.lower()
        assert canonical_email(canonical) == canonical
        assert canonical_email(canonical.upper()) == canonical


def test_the_accounts_wrapper_refuses_with_invalid_input_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as refused:
        accounts_canonical_email("adm\u0130n@example.com", param="email")
    assert refused.value.param == "email" and refused.value.code == "invalid_input"
