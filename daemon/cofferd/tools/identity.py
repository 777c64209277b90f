"""The device's secrets, made on the device: ``coffer-identity.service`` runs this at boot.

``python -m cofferd.tools.identity`` (as root, before cofferd starts) makes
sure ``--dir`` (default ``/var/lib/coffer-identity``, which an image leaves
empty) holds, each sealed by ``systemd-creds encrypt`` with its default key
(``auto``: the TPM2 where there is one, and the host key
``/var/lib/systemd/credential.secret``):

- ``device-identity.cred``: credential ``coffer-device-identity``, the device's
  Ed25519 private key (PKCS#8 PEM);
- ``device-key.cred``: credential ``coffer-device-key``, the 32 random bytes
  that seal cofferd's offline records;

and ``state.json`` (not secret, credential ``coffer-identity-state``): the
key id, when it was made, and whether it replaced a key that could not be
opened here.

A file present is test-decrypted (``systemd-creds decrypt``). One that does
not open on this machine (an image made elsewhere, a copy from another
device, another host key or TPM) is replaced: a new identity, which must
enroll again (the state says so, and the journal gets a warning), and a new
records key with it, so records obtained under the old identity stay shut.
cofferd therefore never meets a credential it cannot load (243/CREDENTIALS).

On an upgrade from a version whose postinst made ``/etc/coffer/device-key.cred``,
that key is moved here if it opens on this machine (the device's offline
records keep opening), and removed either way.

Secrets never touch the disk in clear: the key is made in memory and given to
``systemd-creds`` on its stdin; its output goes to a temp file (umask 077)
renamed into place. Decrypted test copies are read from a pipe and dropped.
Exit status: 0 when both credentials are in place, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cofferd.field.identity import IDENTITY_CREDENTIAL, DeviceIdentity

DEFAULT_DIR = Path("/var/lib/coffer-identity")
LEGACY_DEVICE_KEY = Path("/etc/coffer/device-key.cred")
DEVICE_KEY_CREDENTIAL = "coffer-device-key"
IDENTITY_FILE = "device-identity.cred"
DEVICE_KEY_FILE = "device-key.cred"
STATE_FILE = "state.json"
TIMEOUT = 120.0  # a TPM2 can be slow; a hang must still end


class IdentityError(Exception):
    """systemd-creds could not seal a credential; the message quotes no secret."""


def say(message: str, *, warning: bool = False) -> None:
    """One journal line (stdout under systemd; ``<4>`` makes it a warning there)."""
    print(f"<4>{message}" if warning else message, flush=True)


class Creds:
    """``systemd-creds`` encrypt and decrypt, secrets by pipe only."""

    def __init__(self, program: str) -> None:
        self.program = program

    def encrypt(self, name: str, secret: bytes, dest: Path) -> None:
        """Seal ``secret`` into ``dest`` atomically (temp file, fsync, rename), mode 0600."""
        tmp = dest.with_name(f".{dest.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        proc = subprocess.run(
            [self.program, "encrypt", f"--name={name}", "-", str(tmp)],
            input=secret,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise IdentityError(
                f"systemd-creds encrypt --name={name} failed ({proc.returncode}): "
                f"{_tail(proc.stderr)}"
            )
        _commit(tmp, dest)

    def opens(self, name: str, path: Path) -> bytes | None:
        """The plaintext of ``path`` if it decrypts on this machine as ``name``; else None."""
        try:
            proc = subprocess.run(
                [self.program, "decrypt", f"--name={name}", str(path), "-"],
                capture_output=True,
                timeout=TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        if proc.returncode != 0:
            say(f"{path}: does not open on this machine: {_tail(proc.stderr)}", warning=True)
            return None
        return proc.stdout


def _tail(stderr: bytes) -> str:
    # systemd-creds says why (no TPM, wrong host key, bad name); it never
    # prints the plaintext on stderr.
    lines = stderr.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no reason given"


def _commit(tmp: Path, dest: Path) -> None:
    os.chmod(tmp, 0o600)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, dest)
    dirfd = os.open(dest.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _usable_identity(plaintext: bytes) -> DeviceIdentity | None:
    try:
        key = serialization.load_pem_private_key(plaintext, password=None)
    except (ValueError, TypeError):
        return None
    return DeviceIdentity(key) if isinstance(key, Ed25519PrivateKey) else None


def _write_state(path: Path, identity: DeviceIdentity, replaced: bool, reason: str | None) -> None:
    state = {
        "key_id": identity.key_id,
        "public_key": identity.public_key,
        "made_at": int(time.time()),
        "replaced": replaced,
        "reason": reason,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, sort_keys=True) + "\n")
    _commit(tmp, path)
    os.chmod(path, 0o600)


def ensure(directory: Path, creds: Creds, legacy_device_key: Path | None) -> DeviceIdentity:
    """Both credentials in ``directory``, made or replaced as needed; the identity."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    identity_path = directory / IDENTITY_FILE
    key_path = directory / DEVICE_KEY_FILE
    state_path = directory / STATE_FILE

    identity: DeviceIdentity | None = None
    reason: str | None = None
    if identity_path.exists():
        plaintext = creds.opens(IDENTITY_CREDENTIAL, identity_path)
        if plaintext is None:
            reason = "the previous identity could not be decrypted on this machine"
        else:
            identity = _usable_identity(plaintext)
            if identity is None:
                reason = "the previous identity was not an Ed25519 PKCS#8 key"
    if identity is None:
        identity = DeviceIdentity.generate()
        creds.encrypt(IDENTITY_CREDENTIAL, identity.pkcs8_pem(), identity_path)
        if reason is None:
            say(f"made the device identity {identity.key_id} (public key {identity.public_key})")
        else:
            say(
                f"{reason} (an image or a copy from another machine?): made a new"
                f" identity {identity.key_id} (public key {identity.public_key});"
                " new identity: enroll again",
                warning=True,
            )
        # At once: should the records key fail next, the next boot still
        # knows this identity replaced another.
        _write_state(state_path, identity, replaced=reason is not None, reason=reason)

    # A new identity gets a new records key too: records obtained under the
    # old one must not open.
    key_ok = False
    if reason is not None:
        say("made a new records key with the new identity: earlier offline records stay shut")
    elif key_path.exists():
        plaintext = creds.opens(DEVICE_KEY_CREDENTIAL, key_path)
        key_ok = plaintext is not None and len(plaintext) == 32
        if not key_ok:
            say(
                "the records key does not open here: a new one; offline records are lost",
                warning=True,
            )
    elif legacy_device_key is not None and legacy_device_key.exists():
        plaintext = creds.opens(DEVICE_KEY_CREDENTIAL, legacy_device_key)
        if plaintext is not None and len(plaintext) == 32:
            tmp = key_path.with_name(f".{key_path.name}.tmp")
            tmp.write_bytes(legacy_device_key.read_bytes())
            _commit(tmp, key_path)
            key_ok = True
            say(f"moved the records key from {legacy_device_key} to {key_path}")
    if not key_ok:
        creds.encrypt(DEVICE_KEY_CREDENTIAL, os.urandom(32), key_path)
        say(f"made a new records key in {key_path}")
    if legacy_device_key is not None:
        with contextlib.suppress(FileNotFoundError):
            legacy_device_key.unlink()
            say(f"removed {legacy_device_key} (the records key now lives in {directory})")

    if not state_path.exists():
        _write_state(state_path, identity, replaced=reason is not None, reason=reason)
    return identity


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cofferd.tools.identity",
        description="Make (or replace) the device identity and records key, sealed by"
        " systemd-creds. Run by coffer-identity.service before cofferd.",
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the credentials live")
    parser.add_argument(
        "--legacy-device-key",
        type=Path,
        default=LEGACY_DEVICE_KEY,
        help="the records key an older package made, moved here if it opens",
    )
    parser.add_argument("--systemd-creds", default="systemd-creds", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.umask(0o077)
    try:
        ensure(args.dir, Creds(args.systemd_creds), args.legacy_device_key)
    except (IdentityError, OSError, subprocess.SubprocessError) as exc:
        print(f"coffer-identity: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
