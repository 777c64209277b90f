"""Signed leases: the upstream vouches, with its Ed25519 key, for what a device may use offline.

A lease names who got a resource, which version, the digests of its key and
parts, when it was issued (this server's clock) and until when a device may
use it without asking again. The signature covers the payload **bytes** as
sent, so a verifier checks the bytes first and parses them after: no
canonical form of JSON has to be agreed on (docs/upstream-protocol.md).

The key lives in the data dir as a PKCS#8 PEM file (mode 0600), made on first
use; it signs leases and nothing else, so a lease signature cannot be replayed
as anything else.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coffer_upstream.keys import load_or_create_ed25519
from coffer_upstream.store import Version

#: The ``v`` of the payloads this server writes.
LEASE_FORMAT = 1
#: Characters of the hex sha256 of the raw public key that make its ``key_id``.
KEY_ID_CHARS = 16


class LeaseKey:
    """The Ed25519 key that signs leases, and what a device pins of it."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public_raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = hashlib.sha256(self.public_raw).hexdigest()[:KEY_ID_CHARS]

    @property
    def public_key(self) -> str:
        """The raw 32-byte public key in standard base64: what a device pins."""
        return base64.b64encode(self.public_raw).decode("ascii")

    def sign(self, payload: bytes) -> bytes:
        return self._private.sign(payload)

    @classmethod
    def load_or_create(cls, path: Path) -> LeaseKey:
        """The key in ``path``, generated there first if there is none."""
        return cls(load_or_create_ed25519(path))


class LeaseIssuer:
    """Signs a lease of ``seconds`` for each resource answer."""

    def __init__(self, key: LeaseKey, seconds: int) -> None:
        self._key = key
        self._seconds = seconds

    def issue(
        self, leased: Version, subject: str, now: int, device_id: str | None = None
    ) -> dict[str, str]:
        """The ``lease`` object of a resource answer, issued at ``now`` for ``subject``
        (an email, or ``device:<id>`` with ``device_id`` for a device's token)."""
        payload = lease_payload(leased, subject, now, now + self._seconds, device_id)
        return {
            "payload": b64url(payload),
            "signature": b64url(self._key.sign(payload)),
            "key_id": self._key.key_id,
        }


def lease_payload(
    leased: Version, subject: str, issued: int, expires: int, device_id: str | None = None
) -> bytes:
    claims: dict[str, Any] = {
        "v": LEASE_FORMAT,
        "sub": subject,
        "folder": leased.folder,
        "name": leased.name,
        "version": leased.version,
        # A digest of the key, never the key: the lease is kept beside the cache.
        "key_sha256": hashlib.sha256(leased.key).hexdigest(),
        "small_sha256": hashlib.sha256(leased.small).hexdigest(),
        "big_sha256": leased.big_sha256.lower(),
        "big_size": leased.big_size,
        "plaintext_size": leased.plaintext_size,
        "iat": issued,
        "exp": expires,
    }
    if device_id is not None:
        claims["device_id"] = device_id
    return json.dumps(claims, separators=(",", ":"), sort_keys=True).encode("utf-8")


def b64url(raw: bytes) -> str:
    """Base64url without padding (RFC 4648 section 5)."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
