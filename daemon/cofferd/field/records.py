"""The offline records: per resource, what a load needs without the upstream.

A record holds the resource's key, small part, sizes, big part digest and the
lease as received, serialised as JSON and sealed with the device key
(:mod:`cofferd.field.sealing`) into the index's ``records`` table; the lease's
expiry is kept in clear beside it so listings need no key. Without a device
key records live in this process's memory only: offline use then ends at
restart.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass
from typing import Any

from cofferd.field.sealing import RecordUnreadable, Sealer
from cofferd.resources.index import Index
from cofferd.resources.wire import ResourceInfo


@dataclass(frozen=True)
class Held:
    """A record's content in the clear."""

    folder: str
    name: str
    version: int
    key: bytes
    small: bytes
    big_size: int
    big_sha256: str
    plaintext_size: int
    lease: dict[str, Any]

    def __repr__(self) -> str:  # the key stays out of logs
        return f"Held({self.folder}/{self.name} version {self.version})"

    @classmethod
    def of(cls, info: ResourceInfo, lease: dict[str, Any]) -> Held:
        return cls(
            info.folder,
            info.name,
            info.version,
            info.key,
            info.small,
            info.big_size,
            info.big_sha256,
            info.plaintext_size,
            lease,
        )

    def info(self) -> ResourceInfo:
        """The info a load from the cache needs; no CDN URL (offline: none is valid)."""
        return ResourceInfo(
            folder=self.folder,
            name=self.name,
            version=self.version,
            small=self.small,
            key=self.key,
            big_url="",
            big_size=self.big_size,
            big_sha256=self.big_sha256,
            plaintext_size=self.plaintext_size,
            lease=self.lease,
        )

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "v": 1,
                "folder": self.folder,
                "name": self.name,
                "version": self.version,
                "key": base64.b64encode(self.key).decode(),
                "small": base64.b64encode(self.small).decode(),
                "big_size": self.big_size,
                "big_sha256": self.big_sha256,
                "plaintext_size": self.plaintext_size,
                "lease": self.lease,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes, folder: str, name: str) -> Held:
        try:
            o = json.loads(data)
            held = cls(
                o["folder"],
                o["name"],
                int(o["version"]),
                base64.b64decode(o["key"], validate=True),
                base64.b64decode(o["small"], validate=True),
                int(o["big_size"]),
                str(o["big_sha256"]),
                int(o["plaintext_size"]),
                dict(o["lease"]),
            )
        except (ValueError, KeyError, TypeError):
            raise RecordUnreadable(f"the record of {folder}/{name} is malformed") from None
        if (held.folder, held.name) != (folder, name) or o.get("v") != 1:
            raise RecordUnreadable(f"the record of {folder}/{name} is about something else")
        return held


@dataclass(frozen=True)
class Summary:
    folder: str
    name: str
    version: int
    lease_expires: float | None


class RecordStore:
    """Records sealed into the index (with a device key) or kept in memory (without)."""

    def __init__(self, index: Index | None, sealer: Sealer | None) -> None:
        self._index = index if sealer is not None else None
        self._sealer = sealer
        self._lock = threading.Lock()
        self._memory: dict[tuple[str, str], tuple[Held, float]] = {}

    @property
    def persistent(self) -> bool:
        return self._index is not None

    def put(self, held: Held, expires: float) -> None:
        if self._index is not None and self._sealer is not None:
            sealed = self._sealer.seal(held.folder, held.name, held.to_bytes())
            self._index.put_record(held.folder, held.name, held.version, expires, sealed)
            return
        with self._lock:
            self._memory[(held.folder, held.name)] = (held, expires)

    def exists(self, folder: str, name: str) -> bool:
        if self._index is not None:
            return self._index.record(folder, name) is not None
        with self._lock:
            return (folder, name) in self._memory

    def get(self, folder: str, name: str) -> Held | None:
        """The record of ``folder/name``, opened; RecordUnreadable if it does not open."""
        if self._index is not None and self._sealer is not None:
            row = self._index.record(folder, name)
            if row is None:
                return None
            held = Held.from_bytes(self._sealer.unseal(folder, name, row.sealed), folder, name)
            if held.version != row.version:
                raise RecordUnreadable(f"the record of {folder}/{name} disagrees with its row")
            return held
        with self._lock:
            found = self._memory.get((folder, name))
        return None if found is None else found[0]

    def delete(self, folder: str, name: str) -> bool:
        if self._index is not None:
            return self._index.delete_record(folder, name)
        with self._lock:
            return self._memory.pop((folder, name), None) is not None

    def clear(self) -> int:
        if self._index is not None:
            return self._index.clear_records()
        with self._lock:
            n = len(self._memory)
            self._memory.clear()
        return n

    def summaries(self) -> list[Summary]:
        if self._index is not None:
            return [
                Summary(r.folder, r.name, r.version, r.lease_expires) for r in self._index.records()
            ]
        with self._lock:
            items = sorted(self._memory.items())
        return [Summary(f, n, held.version, exp) for (f, n), (held, exp) in items]
