"""The audit trail: who did what to which resource, one journal entry per call.

An :class:`AuditRecord` has a fixed set of typed fields and nothing else, so
a secret cannot travel in one: there is no place for params, credentials or
free text. The caller's uid, gid and pid are the kernel's (``SO_PEERCRED``);
journald's own ``_PID``/``_UID`` are the daemon's, hence the ``COFFER_`` ones.

Each kind has its own ``MESSAGE_ID`` so an operator can ask for it alone
(``journalctl MESSAGE_ID=57ceaf16529b48b6a928cb96acdcfad8``) or by method
(``journalctl -u cofferd COFFER_METHOD=load -o json``). The kinds and their ids
are the method table's (``MethodSpec.audit``): this module knows no method.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Literal

from cofferd.observe.journal import FieldValue, Sink

#: ``hung_up``: the caller was gone before the answer (no code: nobody got one).
Outcome = Literal["ok", "error", "hung_up"]

# syslog priorities: a caller's mistake is a warning, the daemon's own failure an error.
_PRIORITY_OK = 6
_PRIORITY_ERROR = 4
_PRIORITY_INTERNAL = 3
_INTERNAL_ERROR = -32603
_MESSAGE_ID = re.compile(r"[0-9a-f]{32}")


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    """One audited call: ``message_id`` names its kind, ``method`` the method called."""

    method: str
    message_id: str
    outcome: Outcome
    uid: int
    gid: int
    pid: int
    duration_s: float
    error_code: int | None = None
    folder: str | None = None
    name: str | None = None
    version: int | None = None
    bytes: int | None = None

    def __post_init__(self) -> None:
        if type(self.method) is not str or not self.method:
            raise ValueError("an audit record names its method")
        if type(self.message_id) is not str or not _MESSAGE_ID.fullmatch(self.message_id):
            raise ValueError(f"MESSAGE_ID must be 32 lowercase hex digits: {self.message_id!r}")
        if self.outcome not in ("ok", "error", "hung_up"):
            raise ValueError(f"outcome must be 'ok', 'error' or 'hung_up', not {self.outcome!r}")
        if (self.outcome == "error") != (self.error_code is not None):
            raise ValueError("error_code is given exactly when the outcome is 'error'")
        for field in ("uid", "gid", "pid", "error_code", "version", "bytes"):
            value = getattr(self, field)
            # bool is an int to Python, never a credential or a size here.
            if value is not None and (type(value) is not int):
                raise TypeError(f"{field} must be an int, not {type(value).__name__}")
        for field in ("folder", "name"):
            value = getattr(self, field)
            if value is not None and type(value) is not str:
                raise TypeError(f"{field} must be a str, not {type(value).__name__}")
        if not isinstance(self.duration_s, int | float) or self.duration_s < 0:
            raise ValueError("duration_s must be a non-negative number")

    @property
    def priority(self) -> int:
        if self.outcome != "error":
            return _PRIORITY_OK
        return _PRIORITY_INTERNAL if self.error_code == _INTERNAL_ERROR else _PRIORITY_ERROR

    def message(self) -> str:
        """The human line: ``load ok models/a.bin v3 1024 bytes uid=0 gid=0 pid=1 12.5ms``."""
        parts = [self.method, self.outcome.replace("_", " ")]
        if self.error_code is not None:
            parts.append(str(self.error_code))
        if self.name is not None:
            parts.append(f"{self.folder}/{self.name}" if self.folder is not None else self.name)
        elif self.folder is not None:
            parts.append(f"{self.folder}/")
        if self.version is not None:
            parts.append(f"v{self.version}")
        if self.bytes is not None:
            parts.append(f"{self.bytes} bytes")
        parts += [f"uid={self.uid}", f"gid={self.gid}", f"pid={self.pid}"]
        parts.append(f"{self.duration_s * 1000:.1f}ms")
        return " ".join(parts)

    def fields(self) -> dict[str, FieldValue]:
        """The journal entry."""
        out: dict[str, FieldValue] = {
            "MESSAGE": self.message(),
            "MESSAGE_ID": self.message_id,
            "PRIORITY": self.priority,
            "SYSLOG_IDENTIFIER": "cofferd",
            "COFFER_METHOD": self.method,
            "COFFER_OUTCOME": self.outcome,
            "COFFER_UID": self.uid,
            "COFFER_GID": self.gid,
            "COFFER_PID": self.pid,
            "COFFER_DURATION_MS": f"{self.duration_s * 1000:.1f}",
        }
        optional: dict[str, int | str | None] = {
            "COFFER_ERROR_CODE": self.error_code,
            "COFFER_FOLDER": self.folder,
            "COFFER_NAME": self.name,
            "COFFER_VERSION": self.version,
            "COFFER_BYTES": self.bytes,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out


class AuditLog:
    """Writes audit records to a journal sink (see :func:`cofferd.observe.journal.open_sink`)."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink

    def record(self, record: AuditRecord) -> bool:
        """Write one record; False if the journal dropped it (it never blocks)."""
        return self._sink.send(record.fields())

    def close(self) -> None:
        self._sink.close()
