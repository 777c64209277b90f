"""Records sealed with the device key: AES-256-GCM, a random 12-byte nonce per seal.

Sealed form: ``b"CR1" || nonce (12) || ciphertext+tag``. The associated data
``coffer/v1/record/<folder>/<name>`` binds a record to its resource, so a
record copied onto another resource's row does not open.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cofferd.errors import OfflineRefused

MAGIC = b"CR1"
NONCE_SIZE = 12


class RecordUnreadable(OfflineRefused):
    """A record that does not open: tampered, truncated or sealed with another device key."""


def associated_data(folder: str, name: str) -> bytes:
    return f"coffer/v1/record/{folder}/{name}".encode()


class Sealer:
    """Seals and opens records with one device key (32 bytes)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a device key is 32 bytes")
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "Sealer(<device key>)"

    def seal(self, folder: str, name: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_SIZE)
        return MAGIC + nonce + self._aead.encrypt(nonce, plaintext, associated_data(folder, name))

    def unseal(self, folder: str, name: str, sealed: bytes) -> bytes:
        if not sealed.startswith(MAGIC) or len(sealed) < len(MAGIC) + NONCE_SIZE + 16:
            raise RecordUnreadable(f"the record of {folder}/{name} is not a sealed record")
        nonce = sealed[len(MAGIC) : len(MAGIC) + NONCE_SIZE]
        body = sealed[len(MAGIC) + NONCE_SIZE :]
        try:
            return self._aead.decrypt(nonce, body, associated_data(folder, name))
        except InvalidTag:
            raise RecordUnreadable(
                f"the record of {folder}/{name} does not open with this device's key"
                " (tampered, or sealed by another device)"
            ) from None
