"""When a call ends: its line in the log, its metrics and, if audited, its audit record.

The dispatcher calls :meth:`CallObserver.done` once per request line, on the
serving thread, so the common case stays cheap: two pre-bound metric series
updated and a tuple queued for the call log. Only an audited method (one
whose spec has an ``audit``, with its ``MESSAGE_ID``) builds an
:class:`~cofferd.observe.audit.AuditRecord`; that record *is* the call's line
(one line per call): under journald it goes natively, with its structured
fields; elsewhere, or if journald drops it, its message goes to the call log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from coffer.protocol import ErrorCode
from cofferd.observe.audit import AuditLog, AuditRecord
from cofferd.observe.calllog import CallLog
from cofferd.observe.metrics import Registry, Series, count_and_observe
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.spec import MethodSpec

log = logging.getLogger("cofferd.rpc")

#: The ``outcome`` label of an error: its code's name (bounded, unlike messages).
_OUTCOMES = {int(code): code.name.lower() for code in ErrorCode}


def outcome_label(code: int | None, hung_up: bool = False) -> str:
    """``ok``, ``hung_up``, or the error code's name (``not_found``...)."""
    if hung_up:
        return "hung_up"
    if code is None:
        return "ok"
    return _OUTCOMES.get(code, "error")


class CallObserver:
    """Logs, counts and audits finished calls; thread-safe, shared by all connections."""

    def __init__(
        self,
        specs: Iterable[MethodSpec],
        *,
        call_log: CallLog | None = None,
        journal: AuditLog | None = None,
        registry: Registry | None = None,
    ) -> None:
        specs = tuple(specs)
        self._traffic = {spec.name: spec.traffic[0] for spec in specs if spec.traffic}
        self._message_ids = {spec.name: spec.audit.message_id for spec in specs if spec.audit}
        self._call_log = call_log
        self._journal = journal
        self._registry = registry
        # Series bound on first use; dict reads and writes are atomic under the
        # GIL, and two threads binding the same series at once bind equal ones.
        self._calls: dict[tuple[str, str], Series] = {}
        self._durations: dict[str, Series] = {}
        if registry is not None:
            self._bytes = {
                "in": registry.series("coffer_bytes_in_total"),
                "out": registry.series("coffer_bytes_out_total"),
            }
            self._cache = {
                True: registry.series("coffer_cache_hits_total"),
                False: registry.series("coffer_cache_misses_total"),
            }

    def done(self, call: Call, seconds: float, code: int | None) -> None:
        """``call`` ended after ``seconds`` with error ``code`` (None: success)."""
        method = call.method or "-"
        fields = call.audit_fields
        if self._registry is not None:
            hung_up = call.hung_up
            outcome = "ok" if code is None and not hung_up else outcome_label(code, hung_up)
            self._count(method, outcome, seconds, fields)
        message_id = self._message_ids.get(method)
        if fields is not None and message_id is not None:
            try:
                self._audit(call, method, message_id, code, seconds, fields)
            except Exception:  # the answer must go out whatever the record did
                log.exception("cannot write the audit record of a %s call", method)
            return
        if self._call_log is not None:
            outcome = "hung up" if call.hung_up else "ok" if code is None else f"error {code}"
            self._call_log.record(method, outcome, call.peer, seconds)

    def _count(
        self, method: str, outcome: str, seconds: float, fields: dict[str, Any] | None
    ) -> None:
        registry = self._registry
        assert registry is not None
        calls = self._calls.get((method, outcome))
        if calls is None:
            calls = self._calls[method, outcome] = registry.series(
                "coffer_calls_total", method=method, outcome=outcome
            )
        durations = self._durations.get(method)
        if durations is None:
            durations = self._durations[method] = registry.series(
                "coffer_call_duration_seconds", method=method
            )
        count_and_observe(calls, durations, seconds)
        if fields is None or outcome != "ok":
            return
        direction = self._traffic.get(method)
        size = fields.get("bytes")
        if direction is not None and type(size) is int and size >= 0:
            self._bytes[direction].inc(size)
        from_cache = fields.get("from_cache")
        if type(from_cache) is bool:
            self._cache[from_cache].inc()

    def _audit(
        self,
        call: Call,
        method: str,
        message_id: str,
        code: int | None,
        seconds: float,
        fields: dict[str, Any],
    ) -> None:
        if call.hung_up:
            outcome, code = "hung_up", None
        else:
            outcome = "ok" if code is None else "error"
        record = AuditRecord(
            method=method,
            message_id=message_id,
            outcome=outcome,  # type: ignore[arg-type]  # one of the three, by the lines above
            uid=call.peer.uid,
            gid=call.peer.gid,
            pid=call.peer.pid,
            duration_s=max(0.0, seconds),
            error_code=code,
            folder=_typed(fields, "folder", str),
            name=_typed(fields, "name", str),
            version=_typed(fields, "version", int),
            bytes=_typed(fields, "bytes", int),
        )
        if self._journal is not None and self._journal.record(record):
            return
        if self._call_log is not None:
            self._call_log.record_line(record.message(), record.priority)


def _typed(fields: dict[str, Any], key: str, kind: type) -> Any:
    value = fields.get(key)
    return value if type(value) is kind else None
