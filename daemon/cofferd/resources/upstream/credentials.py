"""The two kinds of login the API client holds: a person's, or an enrolled device's key."""

from __future__ import annotations

import base64
import re
import secrets

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: RFC 7523's grant type: an access token for a signed assertion.
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
#: How long a device's login assertion is valid (the upstream allows up to 300 s).
ASSERTION_LIFETIME = 60
#: A device id as the upstream makes them (``d_`` + base32); it goes into a JWT header.
DEVICE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class DeviceCredential:
    """An enrolled device's credential: its id and its Ed25519 key. Its repr hides the key.

    The API client compares credentials by identity: keep one object per
    enrollment.
    """

    def __init__(self, device_id: str, key: Ed25519PrivateKey) -> None:
        if not DEVICE_ID.fullmatch(device_id):
            raise ValueError("a device id is 1-128 letters, digits, '_' or '-'")
        self.device_id = device_id
        self._key = key

    @property
    def subject(self) -> str:
        """The ``sub`` of the upstream's tokens and leases for this device."""
        return f"device:{self.device_id}"

    def assertion(self, audience: str, now: float) -> str:
        """A fresh JWT assertion for ``audience``: EdDSA, valid 60 s, a random jti."""
        iat = int(now)
        claims = {
            "iss": self.device_id,
            "sub": self.device_id,
            "aud": audience,
            "iat": iat,
            "exp": iat + ASSERTION_LIFETIME,
            "jti": base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode(),
        }
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.device_id})

    def __repr__(self) -> str:
        return f"DeviceCredential(device_id={self.device_id!r}, key=<hidden>)"


#: What a login holds: a person's (email, password), or a device's key.
Credentials = tuple[str, str] | DeviceCredential


def subject_of(credentials: Credentials) -> str:
    """The ``sub`` the upstream gives this login's tokens and leases."""
    if isinstance(credentials, DeviceCredential):
        return credentials.subject
    return credentials[0]
