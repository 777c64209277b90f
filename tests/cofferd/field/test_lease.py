"""Leases as the reference upstream signs them: verified, and every tampering refused."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cofferd.field.lease import LeaseInvalid, check_matches, key_id, pinned_keys, verify

KEY = secrets.token_bytes(32)
SMALL = secrets.token_bytes(40)
BIG_SHA = hashlib.sha256(b"big").hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def sign(private: Ed25519PrivateKey, **over: Any) -> dict[str, str]:
    payload = {
        "v": 1,
        "sub": "r@example.com",
        "folder": "models",
        "name": "m.bin",
        "version": 3,
        "key_sha256": hashlib.sha256(KEY).hexdigest(),
        "small_sha256": hashlib.sha256(SMALL).hexdigest(),
        "big_sha256": BIG_SHA,
        "big_size": 100,
        "plaintext_size": 90,
        "iat": 1000,
        "exp": 2000,
        **over,
    }
    raw = json.dumps(payload).encode()
    return {
        "payload": b64url(raw),
        "signature": b64url(private.sign(raw)),
        "key_id": key_id(public(private)),
    }


@pytest.fixture
def signer() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def pins(private: Ed25519PrivateKey) -> dict[str, Any]:
    return pinned_keys([base64.b64encode(public(private)).decode()])


def matches(lease: Any, **over: Any) -> None:
    args: dict[str, Any] = {
        "folder": "models",
        "name": "m.bin",
        "version": 3,
        "key": KEY,
        "small": SMALL,
        "big_sha256": BIG_SHA,
        "big_size": 100,
        **over,
    }
    check_matches(lease, **args)


def test_a_good_lease_verifies_and_matches(signer: Ed25519PrivateKey) -> None:
    lease = verify(sign(signer), pins(signer))
    assert (lease.iat, lease.exp, lease.version) == (1000, 2000, 3)
    matches(lease)


def test_tampered_payload_is_refused(signer: Ed25519PrivateKey) -> None:
    raw = sign(signer)
    payload = json.loads(base64.urlsafe_b64decode(raw["payload"] + "=="))
    payload["exp"] = 10**10
    raw["payload"] = b64url(json.dumps(payload).encode())
    with pytest.raises(LeaseInvalid, match="signature does not verify"):
        verify(raw, pins(signer))


def test_signed_by_another_key_is_refused(signer: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(LeaseInvalid, match="not pinned"):
        verify(sign(other), pins(signer))
    forged = {**sign(other), "key_id": key_id(public(signer))}
    with pytest.raises(LeaseInvalid, match="signature does not verify"):
        verify(forged, pins(signer))


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"name": "other.bin"}, "issued for models/m.bin, not models/other.bin"),
        ({"version": 4}, "issued for version 3, not 4"),
        ({"key": secrets.token_bytes(32)}, "key digest differs"),
        ({"small": b"x" * 40}, "small part digest differs"),
        ({"big_sha256": hashlib.sha256(b"x").hexdigest()}, "big part digest differs"),
        ({"big_size": 101}, "size differs"),
    ],
)
def test_lease_for_something_else_is_refused(
    signer: Ed25519PrivateKey, over: dict[str, Any], reason: str
) -> None:
    lease = verify(sign(signer), pins(signer))
    with pytest.raises(LeaseInvalid, match=reason):
        matches(lease, **over)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {"payload": "!!", "signature": "", "key_id": ""},
        {"payload": "e30", "signature": "AAAA", "key_id": "0"},
    ],
)
def test_malformed_leases_are_refused(signer: Ed25519PrivateKey, raw: Any) -> None:
    with pytest.raises(LeaseInvalid):
        verify(raw, pins(signer))


def test_wrong_version_or_times_refused(signer: Ed25519PrivateKey) -> None:
    with pytest.raises(LeaseInvalid, match="version 1"):
        verify(sign(signer, v=2), pins(signer))
    with pytest.raises(LeaseInvalid, match="exp is not after iat"):
        verify(sign(signer, exp=1000), pins(signer))
    with pytest.raises(LeaseInvalid, match="field version"):
        verify(sign(signer, version="3"), pins(signer))
