"""The gateway API key format: generation, hashing and the cheap shape check.

A key is "agw-" + 43 URL-safe base64 characters (32 random bytes, 256 bits). Only its SHA-256 is
stored: a fast hash is right here (unlike passwords) because the secret has full entropy, and the
hot path must hash it on every request. The prefix (first 12 characters) is stored in clear so a
user can tell their keys apart; it carries 48 of the 256 bits, which leaves 208 unguessable.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from dataclasses import dataclass

KEY_PREFIX = "agw-"
KEY_RANDOM_BYTES = 32
PREFIX_CHARS = 12
_KEY_SHAPE = re.compile(r"^agw-[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key. `secret` is shown to the user once and never stored."""

    secret: str
    key_hash: bytes
    prefix: str

    def __repr__(self) -> str:  # keep the secret out of reprs, tracebacks and debug logs
        return f"NewKey(prefix={self.prefix!r})"


def generate_key() -> NewKey:
    raw = secrets.token_bytes(KEY_RANDOM_BYTES)
    secret = KEY_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return NewKey(secret=secret, key_hash=hash_secret(secret), prefix=secret[:PREFIX_CHARS])


def hash_secret(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def looks_like_key(candidate: str) -> bool:
    """True if `candidate` has our shape; anything else is refused without any I/O."""
    return len(candidate) == len(KEY_PREFIX) + 43 and _KEY_SHAPE.match(candidate) is not None
