"""The pinned root of trust and the metadata dir: ``<state_dir>/trust/``.

It is python-tuf's metadata dir: ``root.json`` (the pinned root, then each
root the device followed), ``timestamp.json``, ``snapshot.json``,
``targets.json`` and the delegated roles, each written by ``tuf.ngclient``
once verified. Nothing in it is secret (digests, versions, public keys).

Pinning (``trust.init``) accepts a root that parses and is signed by its own
threshold (python-tuf's ``Root.verify_delegate``). The same root pinned again
changes nothing; another root while one is pinned is a Conflict unless
``replace``, which wipes the dir (and the caller the rollback memory): the
old metadata cannot be verified by the new root. The root is written
atomically, so a crash leaves the old pin or the new one.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root

from coffer.atomic import atomic_file
from cofferd.errors import BadRequest, Conflict, StateUnwritable

DIR_NAME = "trust"
ROOT = "root.json"
TOP_LEVEL = ("root", "timestamp", "snapshot", "targets")


@dataclass(frozen=True)
class Pinned:
    """What ``trust.status`` says of the pinned (or followed) root."""

    version: int
    key_ids: tuple[str, ...]


class Anchor:
    """The metadata dir under one state dir."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / DIR_NAME

    @property
    def root_path(self) -> Path:
        return self.dir / ROOT

    def pinned(self) -> Pinned | None:
        """The root now in the dir (the pinned one, or the last it followed), or None."""
        try:
            root = Metadata[Root].from_bytes(self.root_path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None
        return Pinned(root.signed.version, tuple(sorted(root.signed.keys)))

    def pin(self, text: str, *, replace: bool) -> tuple[Pinned, bool]:
        """Pin ``text`` (a root.json); ``(pinned, wiped)``: whether the old metadata went."""
        data = text.encode("utf-8")
        root = _self_signed(data)
        current = self._current_bytes()
        if current is not None:
            if _same_root(current, data):
                return Pinned(root.signed.version, tuple(sorted(root.signed.keys))), False
            if not replace:
                raise Conflict(
                    "another root of trust is pinned; pin this one with replace"
                    " (it erases the trust metadata and the versions seen)"
                )
        try:
            if current is not None:
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            with atomic_file(self.root_path) as f:
                f.write(data)
        except OSError as exc:
            raise StateUnwritable(f"cannot write {self.root_path}: {exc.strerror}") from exc
        return Pinned(root.signed.version, tuple(sorted(root.signed.keys))), current is not None

    def _current_bytes(self) -> bytes | None:
        try:
            return self.root_path.read_bytes()
        except FileNotFoundError:
            return None

    def roles(self) -> dict[str, Any]:
        """Each top-level role's version and expiry as last verified (null: not yet)."""
        out: dict[str, Any] = {}
        for role in TOP_LEVEL:
            out[role] = None
            with contextlib.suppress(OSError, ValueError):
                md = Metadata.from_bytes((self.dir / f"{role}.json").read_bytes())
                out[role] = {
                    "version": md.signed.version,
                    "expires": md.signed.expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
        return out


def _self_signed(data: bytes) -> Metadata[Root]:
    try:
        root = Metadata[Root].from_bytes(data)
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest(f"the root is not a TUF root metadata file: {exc}") from None
    if root.signed.type != Root.type:
        raise BadRequest("the metadata is not a root")
    try:
        root.signed.verify_delegate(Root.type, root.signed_bytes, root.signatures)
    except UnsignedMetadataError as exc:
        raise BadRequest(f"the root is not signed by its own threshold: {exc}") from None
    return root


def _same_root(a: bytes, b: bytes) -> bool:
    try:
        return Metadata[Root].from_bytes(a).signed == Metadata[Root].from_bytes(b).signed
    except (ValueError, KeyError, TypeError):
        return False
