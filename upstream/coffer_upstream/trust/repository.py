"""The repository's rules: what may be installed, in which order it is checked,
and the snapshot and timestamp the upstream signs after every change.

- ``root`` (the owner, ``trust root``): the first signed by a threshold of its
  own keys; each later one version current + 1 and signed by a threshold of
  the current root's keys *and* of its own. Its ``snapshot`` and
  ``timestamp`` roles name exactly this upstream's online key;
  ``consistent_snapshot`` is true.
- ``targets`` (the owner, ``trust targets``): signed by the current root's
  ``targets`` keys, a higher version, unexpired.
- a delegated role (a publisher, ``PUT /v1/tuf/roles/{role}``): delegated by
  the current targets, signed by a threshold of the delegation's keys,
  version current + 1, unexpired, every target path one the delegation allows.
- After each: a new snapshot (``targets.json`` and every delegated role, with
  version, length and sha256) and a new timestamp, in the same transaction,
  so readers never see one without the other. :meth:`Repository.renew`
  re-signs them when less than half of their life is left.

Every signature and delegation check is python-tuf's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from securesystemslib.exceptions import FormatError
from sqlalchemy import Connection
from tuf.api.exceptions import DownloadError, RepositoryError, UnsignedMetadataError
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, Targets, Timestamp
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from coffer_upstream.trust import Conflict, Invalid, OnlineKeyUnknown, Unsigned
from coffer_upstream.trust.files import TOP_LEVEL, File, Files
from coffer_upstream.trust.onlinekey import OnlineKey

log = logging.getLogger(__name__)

#: Default lifetimes of what the online key signs, in seconds (docs/trust.md).
SNAPSHOT_EXPIRY = 7 * 86400
TIMESTAMP_EXPIRY = 86400

_T = TypeVar("_T", Root, Targets)
_S = TypeVar("_S", Snapshot, Timestamp)
# Compact JSON: what the online key signs is read by machines only.
_SERIALIZER = JSONSerializer(compact=True)


@dataclass(frozen=True)
class Lifetimes:
    snapshot: int = SNAPSHOT_EXPIRY
    timestamp: int = TIMESTAMP_EXPIRY


class Repository:
    def __init__(
        self,
        files: Files,
        online: OnlineKey,
        lifetimes: Lifetimes,
        clock: Callable[[], int],
    ) -> None:
        self.files = files
        self._online = online
        self._lifetimes = lifetimes
        self._clock = clock

    # What the owner installs

    def install_root(self, data: bytes) -> int:
        """Install a root (the first, or the next); return its version."""
        new = _parse(data, Root, "root")
        root = new.signed
        if not root.consistent_snapshot:
            raise Invalid("root must set consistent_snapshot: true")
        for role in ("snapshot", "timestamp"):
            named = root.roles[role]
            if (
                named.keyids != [self._online.keyid]
                or named.threshold != 1
                or root.keys.get(self._online.keyid) != self._online.public
            ):
                raise Invalid(
                    f"root's {role} role must name exactly this upstream's online key "
                    f"{self._online.keyid} (coffer-upstream trust online-key)"
                )
        now = self._clock()
        if root.is_expired(_at(now)):
            raise Invalid("root has expired")
        with self.files.locked() as db:
            current = self.files.latest("root")
            if current is None:
                _verify(root, "root", new, "root is not signed by a threshold of its own keys")
            else:
                if root.version != current.version + 1:
                    raise Conflict(
                        f"root version {root.version}: the current is {current.version}, "
                        f"so the next must be {current.version + 1}"
                    )
                old = _parse(current.data, Root, "root").signed
                _verify(old, "root", new, "root is not signed by a threshold of the current keys")
                _verify(root, "root", new, "root is not signed by a threshold of its own keys")
            self.files.add(db, _file("root", data, root))
            self._sign_snapshot(db, now)
        return root.version

    def install_targets(self, data: bytes) -> int:
        """Install the top-level targets; return its version."""
        new = _parse(data, Targets, "targets")
        now = self._clock()
        with self.files.locked() as db:
            root = self._root()
            _verify(root, "targets", new, "targets is not signed by a threshold of root's keys")
            current = self.files.latest("targets")
            if current is not None and new.signed.version <= current.version:
                raise Conflict(
                    f"targets version {new.signed.version} is not above "
                    f"the current {current.version}"
                )
            if new.signed.is_expired(_at(now)):
                raise Invalid("targets has expired")
            self.files.add(db, _file("targets", data, new.signed))
            self._sign_snapshot(db, now)
        return new.signed.version

    # What a publisher PUTs

    def put_role(self, role: str, data: bytes) -> int:
        """Store a delegated role's new metadata, checked in the documented order."""
        new = _parse(data, Targets, "delegated role")
        now = self._clock()
        with self.files.locked() as db:
            installed = self.files.latest("targets")
            if installed is None:
                raise Conflict("no top-level targets is installed yet")
            targets = _parse(installed.data, Targets, "targets").signed
            if role in TOP_LEVEL or targets.delegations is None:
                raise Invalid(f"role {role} is not delegated by the current targets")
            # Named delegations only (no succinct hash bins): a role a publisher PUTs by name.
            delegation = (targets.delegations.roles or {}).get(role)
            if delegation is None:
                raise Invalid(f"role {role} is not delegated by the current targets")
            _verify(targets, role, new, "not signed by a threshold of the role's keys")
            current = self.files.latest(role)
            expected = 1 if current is None else current.version + 1
            if new.signed.version != expected:
                now_text = "none" if current is None else str(current.version)
                raise Conflict(
                    f"version {new.signed.version} of {role}: the current is {now_text}, "
                    f"so the next must be {expected}"
                )
            if new.signed.is_expired(_at(now)):
                raise Invalid(f"{role} metadata has expired")
            for path in new.signed.targets:
                if not delegation.is_delegated_path(path):
                    raise Invalid(f"target path {path!r} is not one role {role} may sign")
            self.files.add(db, _file(role, data, new.signed))
            self._sign_snapshot(db, now)
        return new.signed.version

    # What the online key signs

    def renew(self) -> str | None:
        """Re-sign snapshot (and timestamp), or timestamp alone, when less than half
        of its life is left; what was renewed, if anything."""
        now = self._clock()
        due = self._due(now)
        if due is None:
            return None
        with self.files.locked() as db:
            # Again under the lock: another replica may have just renewed.
            due = self._due(now)
            if due == "snapshot":
                self._sign_snapshot(db, now)
            elif due == "timestamp":
                snapshot = self.files.latest("snapshot")
                assert snapshot is not None
                self._sign_timestamp(db, now, snapshot)
        return due

    def _due(self, now: int) -> str | None:
        if self.files.latest("targets") is None:
            return None  # nothing to sign yet
        snapshot = self.files.latest("snapshot")
        if snapshot is None or snapshot.expires - now < self._lifetimes.snapshot / 2:
            return "snapshot"
        timestamp = self.files.latest("timestamp")
        if timestamp is None or timestamp.expires - now < self._lifetimes.timestamp / 2:
            return "timestamp"
        return None

    def _sign_snapshot(self, db: Connection, now: int) -> None:
        """A new snapshot of what is installed, and a timestamp of it (none before targets)."""
        targets = self.files.latest("targets")
        if targets is None:
            return
        self._check_online_key()
        meta = {"targets.json": _meta(targets)}
        for delegated in self.files.delegated():
            meta[f"{delegated.role}.json"] = _meta(delegated)
        previous = self.files.latest("snapshot")
        snapshot = Snapshot(
            version=1 if previous is None else previous.version + 1,
            expires=_at(now + self._lifetimes.snapshot),
            meta=meta,
        )
        file = self._sign("snapshot", snapshot, now + self._lifetimes.snapshot)
        self.files.add(db, file)
        self._sign_timestamp(db, now, file)

    def _sign_timestamp(self, db: Connection, now: int, snapshot: File) -> None:
        self._check_online_key()
        previous = self.files.latest("timestamp")
        timestamp = Timestamp(
            version=1 if previous is None else previous.version + 1,
            expires=_at(now + self._lifetimes.timestamp),
            snapshot_meta=_meta(snapshot),
        )
        self.files.add(db, self._sign("timestamp", timestamp, now + self._lifetimes.timestamp))

    def _sign(self, role: str, signed: _S, expires: int) -> File:
        metadata = Metadata(signed)
        metadata.sign(self._online.signer)
        return File(role, signed.version, metadata.to_bytes(_SERIALIZER), expires)

    def _check_online_key(self) -> None:
        """What the online key signs verifies only if root names it: refuse otherwise."""
        root = self._root()
        for role in ("snapshot", "timestamp"):
            if root.roles[role].keyids != [self._online.keyid]:
                raise OnlineKeyUnknown(
                    f"the installed root does not name this upstream's online key "
                    f"{self._online.keyid} for {role}: was online.key replaced?"
                )

    def _root(self) -> Root:
        current = self.files.latest("root")
        if current is None:
            raise Conflict("no root is installed yet")
        return _parse(current.data, Root, "root").signed

    # What the operator reads

    def status(self) -> list[File]:
        """The current version of every role (data included), top-level roles first."""
        found = [self.files.latest(role) for role in TOP_LEVEL]
        return [file for file in found if file is not None] + self.files.delegated()


def _parse(data: bytes, kind: type[_T], what: str) -> Metadata[_T]:
    try:
        metadata = Metadata[kind].from_bytes(data)  # type: ignore[valid-type]
    except (DeserializationError, ValueError, TypeError, KeyError, FormatError) as exc:
        raise Invalid(f"not valid TUF {what} metadata: {_first_line(exc)}") from exc
    if not isinstance(metadata.signed, kind):
        raise Invalid(f"not {what} metadata: its type is {metadata.signed.type}")
    return metadata


def _verify(delegator: Root | Targets, role: str, metadata: Metadata[_T], refusal: str) -> None:
    try:
        delegator.verify_delegate(role, metadata.signed_bytes, metadata.signatures)
    except UnsignedMetadataError as exc:
        raise Unsigned(refusal) from exc
    except (RepositoryError, DownloadError, ValueError) as exc:
        raise Invalid(f"{role}: {_first_line(exc)}") from exc


def _file(role: str, data: bytes, signed: Root | Targets) -> File:
    return File(role, signed.version, data, int(signed.expires.timestamp()))


def _meta(file: File) -> MetaFile:
    return MetaFile(
        version=file.version,
        length=len(file.data),
        hashes={"sha256": hashlib.sha256(file.data).hexdigest()},
    )


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
