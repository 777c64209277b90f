"""The server secret in the data dir (the lease key is ``leases``'s).

``DIR/secret``: 32 random bytes, mode 0600, signing tokens and CDN URLs.
Replicas share it (one data dir, or a copy of the file).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

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
