"""Password hashes: scrypt with a per-user salt, compared in constant time.

A stored hash reads ``scrypt$N$r$p$<salt b64>$<hash b64>`` so its cost can
change later without breaking older hashes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Callable

# 16 MiB of memory and some 40 ms a hash: slow for a guesser, fast for tests.
_N, _R, _P = 2**14, 8, 1
_SALT_BYTES = 16
_HASH_BYTES = 32


def hash_password(password: str, randbytes: Callable[[int], bytes] = os.urandom) -> str:
    salt = randbytes(_SALT_BYTES)
    digest = _scrypt(password, salt, _N, _R, _P)
    return "$".join(
        ("scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(digest)),
    )


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; a malformed ``stored`` never matches."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p))
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=64 * 1024 * 1024,
        dklen=_HASH_BYTES,
    )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


#: Checked against when the email is unknown, so that an unknown email costs
#: the same time as a wrong password and timing does not reveal who has an
#: account. No password matches it (all-zero digest).
DUMMY_HASH = "$".join(
    ("scrypt", str(_N), str(_R), str(_P), _b64(bytes(_SALT_BYTES)), _b64(bytes(_HASH_BYTES)))
)
