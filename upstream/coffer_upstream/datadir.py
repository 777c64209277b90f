"""The data dir layout (documented in docs/upstream-protocol.md)::

    DATA_DIR/
      secret              32 random bytes, mode 0600: signs tokens and CDN URLs
      lease-key.pem       Ed25519 private key (PKCS#8 PEM), mode 0600: signs leases
      upstream.sqlite3    users, resource versions, uploads, archive keys (WAL)
      blobs/<blob_id>     big parts, committed or uploaded and awaiting commit
      tmp/<blob_id>.<random>.part   a PUT in flight; renamed into blobs/ when whole

A blob id is 32 lowercase hex digits, random, so a path built from one is
always a single safe component.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

SECRET_BYTES = 32
_BLOB_ID = re.compile(r"[0-9a-f]{32}")


def new_blob_id() -> str:
    return secrets.token_hex(16)


def is_blob_id(value: str) -> bool:
    return _BLOB_ID.fullmatch(value) is not None


class DataDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.secret_path = root / "secret"
        self.lease_key_path = root / "lease-key.pem"
        self.db_path = root / "upstream.sqlite3"
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"

    def ensure(self) -> None:
        """Create the directories (mode 0700) if they are missing."""
        for path in (self.root, self.blobs, self.tmp):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The database holds password hashes and keys: only its owner reads it.
        # SQLite gives its -wal and -shm files the same mode.
        os.close(os.open(self.db_path, os.O_WRONLY | os.O_CREAT, 0o600))

    def load_secret(self, randbytes: Callable[[int], bytes] = os.urandom) -> bytes:
        """The server secret, generated on first use into a file only its owner can read."""
        try:
            # O_EXCL: of two processes starting at once, one writes and both read the same.
            fd = os.open(self.secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(randbytes(SECRET_BYTES))
                f.flush()
                os.fsync(f.fileno())
        secret = self.secret_path.read_bytes()
        if len(secret) != SECRET_BYTES:
            raise ValueError(f"{self.secret_path} is not a {SECRET_BYTES}-byte secret")
        return secret

    def blob_path(self, blob_id: str) -> Path:
        if not is_blob_id(blob_id):
            raise ValueError("not a blob id")
        return self.blobs / blob_id

    def temp_path(self, blob_id: str) -> Path:
        return self.tmp / f"{self.blob_path(blob_id).name}.{secrets.token_hex(8)}.part"

    def temp_paths(self, blob_id: str | None = None) -> Iterator[Path]:
        """Temp files of PUTs in flight (for one blob, or all)."""
        pattern = "*.part" if blob_id is None else f"{blob_id}.*.part"
        return self.tmp.glob(pattern)

    def remove_blob(self, blob_id: str) -> None:
        """Remove a blob and its temp files; missing ones are fine."""
        for path in (self.blob_path(blob_id), *self.temp_paths(blob_id)):
            path.unlink(missing_ok=True)
