"""The upstream's lease (docs/upstream-protocol.md, "Leases"): parse, verify, match.

Verification follows the protocol's order: decode, check the Ed25519 signature
over the payload bytes as received with a *pinned* key (no trust on first
use), only then parse the JSON, then check that it names this resource and
version and the digests of the key and small part the device holds.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cofferd.errors import OfflineRefused

_HEX64 = re.compile(r"[0-9a-f]{64}")


class LeaseInvalid(OfflineRefused):
    """A lease that is malformed, not signed by a pinned key, or about something else."""


@dataclass(frozen=True)
class Lease:
    """A verified lease's payload (only the fields cofferd uses)."""

    sub: str
    folder: str
    name: str
    version: int
    key_sha256: str
    small_sha256: str
    big_sha256: str
    big_size: int
    iat: int
    exp: int


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


def pinned_keys(encoded: Iterable[str]) -> dict[str, Ed25519PublicKey]:
    """Pinned public keys (standard base64 of 32 raw bytes) by key id; ValueError if bad."""
    keys = {}
    for text in encoded:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            raise ValueError(f"lease public key {text[:12]!r}...: not base64 of 32 bytes")
        keys[key_id(raw)] = Ed25519PublicKey.from_public_bytes(raw)
    return keys


def _b64url(text: object, what: str) -> bytes:
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*={0,2}", text):
        raise LeaseInvalid(f"lease: {what} is not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise LeaseInvalid(f"lease: {what} is not base64url") from None


def verify(raw: object, keys: Mapping[str, Ed25519PublicKey]) -> Lease:
    """The payload of lease object ``raw`` if a pinned key signed it; else LeaseInvalid."""
    if not isinstance(raw, Mapping):
        raise LeaseInvalid("lease: not an object")
    payload = _b64url(raw.get("payload"), "payload")
    signature = _b64url(raw.get("signature"), "signature")
    key = keys.get(str(raw.get("key_id")))
    if key is None:
        raise LeaseInvalid("lease: signed by a key that is not pinned")
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        raise LeaseInvalid("lease: the signature does not verify") from None
    try:
        obj = json.loads(payload)
    except ValueError:
        raise LeaseInvalid("lease: the payload is not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != 1:
        raise LeaseInvalid("lease: not a version 1 payload")
    try:
        lease = Lease(
            sub=_field(obj, "sub", str),
            folder=_field(obj, "folder", str),
            name=_field(obj, "name", str),
            version=_field(obj, "version", int),
            key_sha256=_field(obj, "key_sha256", str),
            small_sha256=_field(obj, "small_sha256", str),
            big_sha256=_field(obj, "big_sha256", str),
            big_size=_field(obj, "big_size", int),
            iat=_field(obj, "iat", int),
            exp=_field(obj, "exp", int),
        )
    except (KeyError, TypeError) as exc:
        raise LeaseInvalid(f"lease: field {exc.args[0]} is missing or of the wrong type") from None
    if lease.exp <= lease.iat:
        raise LeaseInvalid("lease: exp is not after iat")
    return lease


def _field(obj: Mapping[str, Any], name: str, kind: type) -> Any:
    value = obj.get(name)
    if type(value) is not kind:
        raise KeyError(name)
    return value


def check_matches(
    lease: Lease,
    *,
    folder: str,
    name: str,
    version: int,
    key: bytes,
    small: bytes,
    big_sha256: str,
    big_size: int,
) -> None:
    """LeaseInvalid unless ``lease`` is about exactly this resource version and these parts."""
    if (lease.folder, lease.name) != (folder, name):
        raise LeaseInvalid(f"lease: issued for {lease.folder}/{lease.name}, not {folder}/{name}")
    if lease.version != version:
        raise LeaseInvalid(f"lease: issued for version {lease.version}, not {version}")
    checks = (
        ("key", lease.key_sha256, hashlib.sha256(key).hexdigest()),
        ("small part", lease.small_sha256, hashlib.sha256(small).hexdigest()),
        ("big part", lease.big_sha256, big_sha256),
    )
    for what, theirs, ours in checks:
        if not _HEX64.fullmatch(theirs) or not hmac.compare_digest(theirs, ours):
            raise LeaseInvalid(f"lease: the {what} digest differs from the one held")
    if lease.big_size != big_size:
        raise LeaseInvalid("lease: the big part's size differs from the one held")
