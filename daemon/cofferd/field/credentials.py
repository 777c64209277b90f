"""Reading systemd credentials: the upstream login, the device key and identity.

systemd puts each credential of a unit (``LoadCredential=``,
``LoadCredentialEncrypted=``) as a file in ``$CREDENTIALS_DIRECTORY``, readable
by the service only, on a non-swappable ramfs. Outside systemd (``make run``,
tests) the same variable names a plain directory. cofferd only ever reads
these files, at the moment it needs them; it never writes or logs them.

Formats (docs/operations.md):

- ``coffer-login``: a JSON object ``{"email": "...", "password": "..."}``
  (UTF-8, nothing else in it; a trailing newline is fine).
- ``coffer-device-key``: 32 raw bytes, or their standard base64 (44 characters,
  surrounding whitespace ignored).
- ``coffer-device-identity``: the device's Ed25519 private key, unencrypted
  PKCS#8, PEM or DER (made on the device at first boot, see
  :mod:`cofferd.tools.identity`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cofferd.names import check_name

log = logging.getLogger(__name__)

#: A credential file bigger than this is not one of ours.
MAX_CREDENTIAL_BYTES = 64 * 1024
DEVICE_KEY_SIZE = 32


class CredentialError(Exception):
    """A credential file exists but is unusable; the message never quotes its content."""


@dataclass(frozen=True)
class LoginCredential:
    email: str
    password: str

    def __repr__(self) -> str:
        return f"LoginCredential(email={self.email!r}, password=<hidden>)"


def _read(directory: Path | None, name: str) -> bytes | None:
    if directory is None:
        return None
    check_name(name, "credential name")
    try:
        with (directory / name).open("rb") as f:
            data = f.read(MAX_CREDENTIAL_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialError(f"credential {name}: cannot read it: {exc.strerror}") from None
    if len(data) > MAX_CREDENTIAL_BYTES:
        raise CredentialError(f"credential {name}: over {MAX_CREDENTIAL_BYTES} bytes")
    return data


def read_raw(directory: Path | None, name: str) -> bytes | None:
    """The credential ``name``'s bytes (at most 64 KiB); None if there is none."""
    return _read(directory, name)


def read_login(directory: Path | None, name: str) -> LoginCredential | None:
    """The login credential ``name`` in ``directory``; None if there is none."""
    data = _read(directory, name)
    if data is None:
        return None
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        # from None: the decoder's message would quote the content.
        raise CredentialError(f"credential {name}: not a JSON object") from None
    if not isinstance(obj, dict) or set(obj) != {"email", "password"}:
        raise CredentialError(f"credential {name}: must hold exactly email and password")
    email, password = obj["email"], obj["password"]
    if not (isinstance(email, str) and email and isinstance(password, str) and password):
        raise CredentialError(f"credential {name}: email and password must be non-empty strings")
    return LoginCredential(email, password)


def read_device_key(directory: Path | None, name: str) -> bytes | None:
    """The 32-byte device key ``name`` in ``directory``; None if there is none."""
    data = _read(directory, name)
    if data is None:
        return None
    if len(data) == DEVICE_KEY_SIZE:
        return data
    try:
        key = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != DEVICE_KEY_SIZE:
        raise CredentialError(
            f"credential {name}: not {DEVICE_KEY_SIZE} raw bytes nor their base64"
        )
    return key


def read_identity_key(directory: Path | None, name: str) -> Ed25519PrivateKey | None:
    """The device's Ed25519 private key ``name`` (PKCS#8, PEM or DER); None if there is none.

    Anything else (another algorithm, an encrypted PKCS#8, garbage) is one
    CredentialError that never quotes the content.
    """
    data = _read(directory, name)
    if data is None:
        return None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # from None: the parser's message could quote the content.
        raise CredentialError(
            f"credential {name}: not an unencrypted PKCS#8 private key (PEM or DER)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialError(f"credential {name}: not an Ed25519 key")
    return key
