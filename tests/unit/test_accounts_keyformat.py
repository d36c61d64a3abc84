"""Gateway key format: shape, entropy, prefix and hash."""

from __future__ import annotations

import base64
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from aichat_gateway.accounts.keyformat import generate_key, hash_secret, looks_like_key


def test_a_key_is_agw_followed_by_43_urlsafe_base64_characters() -> None:
    key = generate_key()
    assert key.secret.startswith("agw-") and len(key.secret) == 47
    assert set(key.secret[4:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_a_key_encodes_32_random_bytes() -> None:
    body = generate_key().secret[4:]
    assert len(base64.urlsafe_b64decode(body + "=")) == 32


def test_a_thousand_keys_are_all_different() -> None:
    assert len({generate_key().secret for _ in range(1000)}) == 1000


def test_keys_use_the_whole_alphabet_over_many_draws() -> None:
    seen = set("".join(generate_key().secret[4:] for _ in range(200)))
    assert len(seen) == 64


def test_the_stored_hash_is_the_sha256_digest_of_the_secret() -> None:
    key = generate_key()
    assert key.key_hash == hashlib.sha256(key.secret.encode()).digest() == hash_secret(key.secret)


def test_the_prefix_is_the_first_twelve_characters_of_the_secret() -> None:
    key = generate_key()
    assert key.prefix == key.secret[:12]


def test_the_repr_of_a_new_key_does_not_show_the_secret() -> None:
    key = generate_key()
    assert key.secret not in repr(key) and key.secret[12:] not in str(key)


def test_generated_keys_look_like_keys() -> None:
    assert looks_like_key(generate_key().secret)


def test_strings_of_another_shape_do_not_look_like_keys() -> None:
    good = generate_key().secret
    wrong = ("", "agw-", good[:-1], good + "A", "sk-" + good[4:], good[:10] + "!" + good[11:], " " + good[1:])
    for bad in wrong:
        assert not looks_like_key(bad)


@given(st.text(max_size=80))
def test_arbitrary_text_looks_like_a_key_only_if_it_has_the_exact_shape(text: str) -> None:
    if looks_like_key(text):
        assert text.startswith("agw-") and len(text) == 47
