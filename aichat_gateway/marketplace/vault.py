"""The key vault: provider keys encrypted at rest with AES-256-GCM, tagged with a key id.

`GATEWAY_SECRET_KEY` holds one or more master keys (comma-separated, current first). Each master
key derives, through HKDF, an encryption key whose id prefixes every ciphertext, so a rotated-out
master key still decrypts old rows until `rotate-keys` re-encrypts them. The fingerprint (HMAC of
the provider key) lets us refuse a key listed twice without storing anything reversible.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_AAD = b"aichat-gateway provider key v1"


class VaultError(Exception):
    """A ciphertext cannot be decrypted: unknown key id or tampered data. Never carries the secret."""


def _derive(master: str, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(master.encode())


class Vault:
    def __init__(self, master_keys: Sequence[str]) -> None:
        if not master_keys:
            raise ValueError("the vault needs at least one master key")
        self._keys: dict[str, AESGCM] = {}
        self._current_kid = ""
        for index, master in enumerate(master_keys):
            raw = _derive(master, b"provider-key-encryption")
            kid = hashlib.sha256(raw).hexdigest()[:8]
            self._keys[kid] = AESGCM(raw)
            if index == 0:
                self._current_kid = kid
        self._fingerprint_key = _derive(master_keys[0], b"provider-key-fingerprint")

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = self._keys[self._current_kid].encrypt(nonce, plaintext.encode(), _AAD)
        return f"{self._current_kid}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str) -> str:
        kid, _, body = token.partition(":")
        aead = self._keys.get(kid)
        if aead is None:
            raise VaultError(f"no master key with id {kid!r} is configured")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            return aead.decrypt(raw[:12], raw[12:], _AAD).decode()
        except (InvalidTag, ValueError) as exc:
            raise VaultError(f"ciphertext with key id {kid!r} failed authentication") from exc

    def needs_rotation(self, token: str) -> bool:
        return not token.startswith(self._current_kid + ":")

    def fingerprint(self, plaintext: str) -> bytes:
        return hmac.new(self._fingerprint_key, plaintext.strip().encode(), hashlib.sha256).digest()


def last4(secret: str) -> str:
    """What a seller sees of their own key."""
    return "…" + secret[-4:] if len(secret) >= 8 else "…"
