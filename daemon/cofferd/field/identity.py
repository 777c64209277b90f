"""The device's own identity: an Ed25519 key pair made on the device at first boot.

``coffer-identity.service`` (:mod:`cofferd.tools.identity`) makes the key
and seals it with ``systemd-creds``; cofferd gets it, decrypted, as the
credential ``coffer-device-identity`` and never writes it. Beside it the unit
writes ``coffer-identity-state`` (not secret, JSON): which key it made, and
whether that key replaced one that could not be opened on this machine (an
image or a copy from elsewhere), in which case the device must enroll again.

:func:`load_identity` reads both once at start. Enrollment and proof-of-key
login use :attr:`IdentityState.identity`: :attr:`DeviceIdentity.private_key`
to sign, :attr:`DeviceIdentity.public_key` (standard base64 of the 32 raw
bytes) to register. Neither the key nor anything derived from its private
half is ever logged.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cofferd.field.credentials import MAX_CREDENTIAL_BYTES, CredentialError, read_identity_key
from cofferd.field.lease import key_id as _key_id

log = logging.getLogger(__name__)

#: The credential holding the private key (PKCS#8; docs/operations.md).
IDENTITY_CREDENTIAL = "coffer-device-identity"
#: The first-boot unit's note about the key it made (JSON, not secret).
STATE_CREDENTIAL = "coffer-identity-state"


class DeviceIdentity:
    """The device's key pair. Its repr shows the key id only."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> DeviceIdentity:
        return cls(Ed25519PrivateKey.generate())

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The private key, for a signer (PyJWT takes it as is)."""
        return self._private

    @property
    def public_key(self) -> str:
        """Standard base64 of the 32 raw public bytes: what the upstream registers."""
        return base64.b64encode(self.public_raw).decode()

    @property
    def key_id(self) -> str:
        """16 hex digits of the public key's sha256, the rule lease keys follow."""
        return _key_id(self.public_raw)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def pkcs8_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM: for ``systemd-creds`` and tests only."""
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def __repr__(self) -> str:
        return f"DeviceIdentity(key_id={self.key_id}, private=<hidden>)"


@dataclass(frozen=True)
class IdentityState:
    """What cofferd knows of its identity at start."""

    #: None: no identity credential (outside systemd without one), or unusable.
    identity: DeviceIdentity | None
    #: This key replaced one that could not be opened here: enroll again.
    new: bool = False
    #: Why the first-boot unit made a new key (None unless ``new``).
    reason: str | None = None

    def status(self, *, enrolled: bool = False) -> dict[str, Any] | None:
        """The ``identity`` member of ``status``; enrollment says whether it is ``enrolled``."""
        if self.identity is None:
            return None
        return {
            "public_key": self.identity.public_key,
            "key_id": self.identity.key_id,
            "new": self.new,
            "enrolled": enrolled,
        }


def read_state(directory: Path | None, key_id: str) -> tuple[bool, str | None]:
    """(new, reason) from the unit's state credential, if it speaks of ``key_id``.

    A missing or malformed state, or one about another key, says nothing: the
    key is then not new.
    """
    if directory is None:
        return False, None
    try:
        with (directory / STATE_CREDENTIAL).open("rb") as f:
            raw = f.read(MAX_CREDENTIAL_BYTES + 1)
        state = json.loads(raw)
    except FileNotFoundError:
        return False, None
    except (OSError, ValueError):
        log.warning("credential %s: unreadable; the identity is taken as not new", STATE_CREDENTIAL)
        return False, None
    if not isinstance(state, dict) or state.get("key_id") != key_id:
        return False, None
    reason = state.get("reason")
    return state.get("replaced") is True, reason if isinstance(reason, str) else None


def load_identity(directory: Path | None) -> IdentityState:
    """The device identity from the credentials dir; logged, never raised."""
    try:
        key = read_identity_key(directory, IDENTITY_CREDENTIAL)
    except CredentialError as exc:
        log.error("%s; the device has no identity", exc)  # noqa: TRY400 (no traceback: it is clear)
        return IdentityState(None)
    if key is None:
        log.warning("no device identity (credential %s absent)", IDENTITY_CREDENTIAL)
        return IdentityState(None)
    identity = DeviceIdentity(key)
    new, reason = read_state(directory, identity.key_id)
    if new:
        log.warning(
            "new device identity %s (%s): enroll again", identity.key_id, reason or "replaced"
        )
    else:
        log.info("device identity %s", identity.key_id)
    return IdentityState(identity, new=new, reason=reason if new else None)
