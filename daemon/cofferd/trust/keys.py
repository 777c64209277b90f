"""Signing keys of the owner and the publishers: Ed25519 key files (docs/trust.md).

- ``<stem>.key``: the private key, PKCS#8 PEM, unencrypted, mode 0600. It is
  held by its owner on their own machine (or as a systemd credential,
  ``$CREDENTIALS_DIRECTORY/<name>``), and used only in the process that signs.
- ``<stem>.pub``: the public key as TUF writes it,
  ``{"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": <hex>}}``;
  its keyid is python-tuf's (securesystemslib's), computed from that object.

:func:`generate` never overwrites a file and never leaves half a pair: each
file is written whole to a temp file beside it, then hard-linked into place
(``link`` fails on an existing name, atomically), the pair undone together.

:func:`load_signer` refuses a private key file that is world-readable (any
"other" permission bit): every local account could have copied it, so it is
a key to revoke, not to sign with, and a refusal (with the ``chmod`` to run,
or the advice to revoke) is what makes that noticed; a warning scrolls by.
Group bits pass: systemd hands credentials to a service as 0440 with its
group, and a team may share a group on purpose.

No error message carries a byte of a key file, and nothing here logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from securesystemslib.signer import CryptoSigner, SSlibKey

__all__ = [
    "PRIVATE_SUFFIX",
    "PUBLIC_SUFFIX",
    "KeyFileError",
    "generate",
    "load_public",
    "load_signer",
    "public_dict",
    "write_new",
]

PRIVATE_SUFFIX = ".key"
PUBLIC_SUFFIX = ".pub"
#: A key file is small: anything bigger is not one (and is not read whole).
MAX_KEY_FILE = 64 * 1024


class KeyFileError(Exception):
    """A key file missing, unreadable, too open, malformed, or already there.

    The message names the file and the problem, never its content.
    """


def public_dict(key: SSlibKey) -> dict[str, object]:
    """The ``.pub`` file's object (TUF's key object, without its keyid)."""
    return key.to_dict()


def generate(path_stem: str | os.PathLike[str]) -> SSlibKey:
    """Make a new Ed25519 key pair: ``<stem>.key`` (0600) and ``<stem>.pub``; the public key.

    Refuses (:class:`KeyFileError`) when either file exists; on any failure
    neither is left behind.
    """
    stem = os.fspath(path_stem)
    private_path = Path(stem + PRIVATE_SUFFIX)
    public_path = Path(stem + PUBLIC_SUFFIX)
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise KeyFileError(f"{path} already exists: not overwriting a key")
    if not private_path.parent.is_dir():
        raise KeyFileError(f"no directory {private_path.parent} to write the key in")
    private_key = Ed25519PrivateKey.generate()
    public = SSlibKey.from_crypto(private_key.public_key())
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub_text = json.dumps(public_dict(public), indent=2, sort_keys=True) + "\n"
    write_new(private_path, pem, 0o600)
    try:
        write_new(public_path, pub_text.encode(), 0o644)
    except BaseException:
        private_path.unlink()
        raise
    return public


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file ``path`` whole, or not at all; never over an existing one.

    :class:`KeyFileError` if ``path`` exists or cannot be written.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise KeyFileError(f"{path} already exists: not overwriting a key") from exc
        except OSError as exc:
            raise KeyFileError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: str | os.PathLike[str], what: str, private: bool) -> bytes:
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise KeyFileError(f"no {what} {name}") from exc
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {name}: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{what} {name} is not a regular file")
        if private and info.st_mode & 0o007:
            raise KeyFileError(
                f"{what} {name} is world-readable (mode {stat.S_IMODE(info.st_mode):04o}): "
                f"refusing to use it; run `chmod 600 {name}` if it was not exposed, "
                "else revoke it and make a new one"
            )
        if info.st_size > MAX_KEY_FILE:
            raise KeyFileError(f"{what} {name} is not a key file (too large)")
        with os.fdopen(fd, "rb", closefd=False) as src:
            return src.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read {what} {name}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def load_signer(path: str | os.PathLike[str]) -> CryptoSigner:
    """A signer from a ``.key`` file (Ed25519, PKCS#8 PEM); :class:`KeyFileError` if unusable."""
    data = _read(path, "private key", private=True)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted with a passphrase
        raise KeyFileError(
            f"private key {os.fspath(path)} is encrypted; coffer reads unencrypted keys "
            "(keep it as a systemd credential, encrypted at rest by systemd-creds)"
        ) from None
    except (ValueError, UnicodeDecodeError):
        # from None: the parser's message may quote the file.
        raise KeyFileError(
            f"{os.fspath(path)} is not a private key (PKCS#8 PEM) such as "
            "`coffer keys generate` makes"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"private key {os.fspath(path)} is not an Ed25519 key")
    return CryptoSigner(key, SSlibKey.from_crypto(key.public_key()))


def load_public(path: str | os.PathLike[str]) -> SSlibKey:
    """The public key of a ``.pub`` file; :class:`KeyFileError` if it is not one."""
    name = os.fspath(path)
    data = _read(path, "public key", private=False)
    malformed = KeyFileError(
        f"{name} is not a public key file such as `coffer keys generate` makes "
        '({"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": <hex>}})'
    )
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise malformed from None
    if not isinstance(obj, dict) or set(obj) != {"keytype", "scheme", "keyval"}:
        raise malformed
    keyval = obj["keyval"]
    if (
        obj["keytype"] != "ed25519"
        or obj["scheme"] != "ed25519"
        or not isinstance(keyval, dict)
        or set(keyval) != {"public"}
        or not isinstance(keyval["public"], str)
    ):
        raise malformed
    try:
        raw = bytes.fromhex(keyval["public"])
        public_key = Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise malformed from None
    key = SSlibKey.from_crypto(public_key)
    if key.keyval["public"] != keyval["public"]:  # upper case, spaces: not TUF's form
        raise malformed
    return key
