"""Bearer tokens and presigned CDN URLs, both HMAC-SHA256 under the server secret.

Each use gets its own key derived from the secret, so a token can never pass
for a URL signature or the other way round.

- A token is ``v1.<payload>.<mac>``, both parts unpadded base64url; the
  payload is JSON ``{"sub": email, "role": role, "iat": t, "exp": t, "ep": epoch}``;
  a device's names it: ``{"sub": "device:<id>", ..., "dev": "<id>"}``.
- A URL signature is the hex HMAC of ``METHOD\\nblob_id\\nexpires``, so a URL
  signed for GET cannot PUT, and neither the blob nor the expiry can be changed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from coffer_upstream.errors import forbidden, unauthorized

_MAX_TOKEN_CHARS = 4096


@dataclass(frozen=True)
class Claims:
    """Who a valid token speaks for."""

    email: str
    role: str
    expires: int
    #: The user's token epoch when it was issued (see accounts).
    epoch: int
    #: The device a device's token speaks for (``email`` is then ``device:<id>``).
    device_id: str | None = None


class Signer:
    def __init__(self, secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._token_key = hmac.digest(secret, b"coffer-upstream/v1/token", "sha256")
        self._url_key = hmac.digest(secret, b"coffer-upstream/v1/cdn-url", "sha256")
        self._clock = clock

    def now(self) -> int:
        return int(self._clock())

    # Tokens

    def issue_token(
        self, email: str, role: str, ttl: int, epoch: int = 0, device_id: str | None = None
    ) -> str:
        now = self.now()
        fields: dict[str, object] = {
            "sub": email,
            "role": role,
            "iat": now,
            "exp": now + ttl,
            "ep": epoch,
        }
        if device_id is not None:
            fields["dev"] = device_id
        payload = json.dumps(fields, separators=(",", ":")).encode("utf-8")
        signed = b"v1." + _b64url(payload)
        mac = hmac.digest(self._token_key, signed, "sha256")
        return (signed + b"." + _b64url(mac)).decode("ascii")

    def check_token(self, token: str) -> Claims:
        """The token's claims, or a 401 (malformed, forged or expired)."""
        invalid = unauthorized("invalid token")
        if len(token) > _MAX_TOKEN_CHARS or not token.isascii():
            raise invalid
        signed, _, mac_text = token.rpartition(".")
        if not signed.startswith("v1."):
            raise invalid
        try:
            mac = _unb64url(mac_text)
            expected = hmac.digest(self._token_key, signed.encode("ascii"), "sha256")
            if not hmac.compare_digest(mac, expected):
                raise invalid
            claims = json.loads(_unb64url(signed[3:]))
        except (ValueError, binascii.Error) as exc:
            raise invalid from exc
        # Signed by us, so well formed; checked anyway so a bug cannot grant access.
        if not (
            isinstance(claims, dict)
            and isinstance(claims.get("sub"), str)
            and isinstance(claims.get("role"), str)
            and type(claims.get("exp")) is int
            and type(claims.get("ep", 0)) is int
            and isinstance(claims.get("dev", ""), str)
        ):
            raise invalid
        if claims["exp"] <= self.now():
            raise unauthorized("token expired")
        return Claims(
            claims["sub"], claims["role"], claims["exp"], claims.get("ep", 0), claims.get("dev")
        )

    # Presigned URLs

    def url_query(self, method: str, blob_id: str, ttl: int) -> str:
        """The query string (``expires=...&sig=...``) of a URL signed for ``method``."""
        expires = self.now() + ttl
        return urlencode({"expires": expires, "sig": self._url_sig(method, blob_id, expires)})

    def check_url(self, method: str, blob_id: str, expires: str | None, sig: str | None) -> None:
        """Return if the signature is ours, for this method and blob, and unexpired; else 403."""
        if expires is None or sig is None:
            raise forbidden("missing URL signature")
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            raise forbidden("invalid URL signature")
        expected = self._url_sig(method, blob_id, int(expires))
        if not hmac.compare_digest(sig.encode("utf-8", "replace"), expected.encode("ascii")):
            raise forbidden("invalid URL signature")
        if int(expires) <= self.now():
            raise forbidden("URL expired")

    def _url_sig(self, method: str, blob_id: str, expires: int) -> str:
        message = f"{method}\n{blob_id}\n{expires}".encode()
        return hmac.new(self._url_key, message, hashlib.sha256).hexdigest()


def _b64url(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _unb64url(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not ASCII")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
