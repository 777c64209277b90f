"""The key files in the data dir: the server secret and the Ed25519 private keys.

- ``DIR/secret``: 32 random bytes, mode 0600, signing tokens and CDN URLs.
- ``DIR/lease-key.pem`` (``leases``) and ``DIR/online.key`` (``trust``): an
  Ed25519 private key each, PKCS#8 PEM, mode 0600, made on first use.

Replicas share them (one data dir, or a copy of the files).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SECRET_BYTES = 32


def load_secret(path: Path, randbytes: Callable[[int], bytes] = os.urandom) -> bytes:
    """The server secret, generated on first use into a file only its owner can read."""
    try:
        # O_EXCL: of two processes starting at once, one writes and both read the same.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(randbytes(SECRET_BYTES))
            f.flush()
            os.fsync(f.fileno())
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"{path} is not a {SECRET_BYTES}-byte secret")
    return secret


def load_or_create_ed25519(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path``, generated there first if there is none.

    A key file others may read is refused: it signs what devices trust.
    """
    if not path.exists():
        _create(path)
    st = path.stat()
    if st.st_mode & 0o077:
        mode = stat.S_IMODE(st.st_mode)
        raise ValueError(f"{path} may be read by others (mode {mode:04o}): chmod 600 it")
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        # A file that parses but is not ours is bad input, like one that does not parse.
        raise ValueError(f"{path} does not hold an Ed25519 private key")  # noqa: TRY004
    return private


def _create(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        # link() fails if the name exists: of two processes creating at once
        # one key wins whole, and both then read that one.
        try:
            os.link(temp, path)
        except FileExistsError:
            return
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        temp.unlink(missing_ok=True)
