"""JSON-RPC 2.0 dispatch: one request line in, one response line (or none) out.

jsonrpcserver does the routing, the params check against each method's
signature, the call and the response, through its public API only:
:func:`jsonrpcserver.dispatch_to_serializable` with our ``deserializer=``,
``validator=`` and ``context=``, and methods that return ``Success``/``Error``.
Three things are ours:

- The envelope check (:func:`check_envelope`), as the ``validator``.
  jsonrpcserver's default validates against a jsonschema (about 200 µs here,
  ten times a whole ``health`` call); ours checks the same rules by hand in
  about a microsecond, plus ours: one object per line (no batches, which could
  not say which request an fd belongs to) and params by name.
- Who may call: a method (or a use of it) that is an operator's
  (``MethodSpec.access``, ``operator_params``) is refused to any other uid
  with Forbidden before it runs.
- The boundary: every method is wrapped so that it never raises; its error is
  mapped by :func:`cofferd.rpc.dispatch.errors.to_rpc_error`. A caller who hung up
  (:class:`~cofferd.errors.PeerGone`) is marked on the :class:`Call`, and the
  transport closes the connection without a response.
- The error shape. Every error leaves as ``{"code", "message", "data":
  {"detail"}}``; the library's own errors (parse error, unknown method, wrong
  params) are given a detail here.

Every line ends at the :class:`~cofferd.rpc.dispatch.observer.CallObserver`, if one is
given: the call's log line, metrics and audit record. For a method whose spec
names params or result members for them (``audit``, ``traffic``,
``cache_hit``) the wrapper fills ``call.audit_fields`` from exactly those
(names only if they pass the name rule, never another param); every other
call allocates nothing for it.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Set
from typing import Any

from jsonrpcserver import Error, Success, dispatch_to_serializable

from coffer.protocol import ErrorCode
from cofferd.errors import Forbidden, PeerGone, message_for
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.errors import INTERNAL_DETAIL, is_expected, to_rpc_error
from cofferd.rpc.dispatch.observer import CallObserver
from cofferd.rpc.dispatch.params import NAME_SCHEMA
from cofferd.rpc.dispatch.spec import MethodSpec

log = logging.getLogger("cofferd.rpc")

ENVELOPE_RULE = (
    'a request is one JSON object per line with "jsonrpc": "2.0", a string "method", '
    'optional "params" as an object (by name) and an optional string or integer "id"'
)
_ENVELOPE_KEYS = frozenset({"jsonrpc", "method", "params", "id"})


def check_envelope(request: Any) -> Any:
    """Raise ValueError unless ``request`` is a single JSON-RPC 2.0 request object."""
    if type(request) is not dict:
        raise ValueError("not an object")
    if request.get("jsonrpc") != "2.0" or type(request.get("method")) is not str:
        raise ValueError("bad jsonrpc or method")
    if not _ENVELOPE_KEYS.issuperset(request):
        raise ValueError("unknown member")
    if "params" in request and type(request["params"]) is not dict:
        raise ValueError("params not by name")
    if "id" in request and type(request["id"]) not in (str, int, type(None)):
        raise ValueError("bad id")
    return request


# A folder or name goes into an audit record only if it is one (a bad one may
# be anything the caller sent, up to a line's 8 MiB).
_NAME = re.compile(NAME_SCHEMA["pattern"])
_RECORD_TYPES: dict[str, type] = {
    "folder": str,
    "name": str,
    "version": int,
    "bytes": int,
    "from_cache": bool,
}


class _Fields:
    """Which params and result members of one method fill ``call.audit_fields``."""

    def __init__(self, spec: MethodSpec) -> None:
        audit = spec.audit
        props = spec.params.get("properties", {})
        #: (record field, param, its default)
        self.params = [
            (field, param, props.get(param, {}).get("default"))
            for field, param in (audit.params.items() if audit else ())
        ]
        #: (record field, result member)
        self.result: list[tuple[str, str]] = list(audit.result.items() if audit else ())
        if spec.traffic is not None:
            self.result.append(("bytes", spec.traffic[1]))
        if spec.cache_hit is not None:
            self.result.append(("from_cache", spec.cache_hit))
        self.wanted = audit is not None or bool(self.result)

    def from_params(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for field, param, default in self.params:
            value = kwargs.get(param, default)
            if type(value) is str and _NAME.fullmatch(value):
                fields[field] = value
        return fields

    def from_result(self, fields: dict[str, Any], result: Any) -> None:
        if type(result) is not dict:
            return
        for field, member in self.result:  # the result says what was done: it wins
            value = result.get(member)
            if type(value) is _RECORD_TYPES[field]:
                fields[field] = value


def _check_access(spec: MethodSpec, uid: int, kwargs: Mapping[str, Any]) -> None:
    """Raise :class:`Forbidden` if this call is an operator's (``uid`` is not one)."""
    what = spec.name if spec.access == "operator" else None
    for param in spec.operator_params:
        if what is None and kwargs.get(param):
            what = f"{spec.name} with {param}"
    if what is not None:
        raise Forbidden(f"uid {uid} may not call {what}: it is for the operator uids (login_uids)")


def _wrap(spec: MethodSpec, operators: Set[int]) -> Callable[..., Any]:
    """Turn a plain method into a jsonrpcserver one that never raises."""
    func, name = spec.func, spec.name
    fields = _Fields(spec)
    guarded = spec.guarded

    @functools.wraps(func)
    def method(call: Call, *args: Any, **kwargs: Any) -> Any:
        call.method = name  # for the call log: set only for known names
        if fields.wanted:
            call.audit_fields = fields.from_params(kwargs)
        try:
            if guarded and call.peer.uid not in operators:
                _check_access(spec, call.peer.uid, kwargs)
            result = func(call, *args, **kwargs)
        except PeerGone as exc:
            log.info("%s: the caller hung up (%s): %s", name, call.peer, exc)
            call.hung_up = True
            code = ErrorCode.INTERNAL_ERROR  # never sent: nobody is left to read it
            return Error(int(code), message_for(code), {"detail": str(exc)})
        except Exception as exc:
            if not is_expected(exc):
                log.exception("%s failed unexpectedly (%s)", name, call.peer)
            err = to_rpc_error(exc)
            call.error_code = err.code
            return Error(err.code, err.message, err.data)
        if call.audit_fields is not None:
            fields.from_result(call.audit_fields, result)
        return Success(result)

    # jsonrpcserver binds params against the signature on every call; a precomputed
    # one spares inspect from unwrapping the decorator each time.
    method.__signature__ = inspect.signature(func)  # type: ignore[attr-defined]
    return method


def _detail(code: int, data: Any) -> str:
    if code == ErrorCode.PARSE_ERROR:
        return f"the line is not valid UTF-8 JSON: {data}"
    if code == ErrorCode.INVALID_REQUEST:
        return ENVELOPE_RULE
    if code == ErrorCode.METHOD_NOT_FOUND:
        shown = repr(data) if isinstance(data, str) and len(data) <= 100 else "that name"
        return f"there is no method {shown}"
    if code == ErrorCode.INVALID_PARAMS:
        return f"wrong params: {data}"
    return INTERNAL_DETAIL


def _deserialize(line: bytes) -> Any:
    # Decoded first: json.loads would sniff the encoding of bytes each time.
    return json.loads(line.decode("utf-8"))  # UnicodeDecodeError is a parse error too


class Dispatcher:
    """The method table, fixed at construction, and the line-to-line dispatch over it.

    ``operators``: the uids that may call an operator's method (the setting
    ``login_uids``); none by default, so a dispatcher built without them
    refuses those methods to everyone.
    """

    def __init__(
        self,
        specs: Iterable[MethodSpec],
        observer: CallObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
        *,
        operators: Set[int] = frozenset(),
    ) -> None:
        self._methods: dict[str, Callable[..., Any]] = {}
        self._observer = observer
        self._clock = clock
        self.specs: tuple[MethodSpec, ...] = tuple(specs)
        for spec in self.specs:
            if spec.name in self._methods:
                raise ValueError(f"method {spec.name!r} is in the table twice")
            self._methods[spec.name] = _wrap(spec, frozenset(operators))

    @property
    def names(self) -> list[str]:
        return sorted(self._methods)

    def handle(self, line: bytes, call: Call) -> dict[str, Any] | None:
        """The response object for one request line, or None for a notification."""
        started = self._clock()
        response = dispatch_to_serializable(
            line,  # our deserializer takes the bytes
            self._methods,
            context=call,
            deserializer=_deserialize,
            validator=check_envelope,
        )
        code = call.error_code
        if response is not None:
            assert isinstance(response, dict)  # the validator refuses batches
            error = response.get("error")
            if error is not None:
                code = error["code"]
                data = error.get("data")
                if not (isinstance(data, dict) and "detail" in data):  # the library's own
                    error["message"] = message_for(code)
                    error["data"] = {"detail": _detail(code, data)}
        if self._observer is not None:
            self._observer.done(call, self._clock() - started, code)
        return response


def error_response(code: int, detail: str, *, id_: Any = None) -> dict[str, Any]:
    """An error response the transport sends on its own (oversized line, busy)."""
    body = {"code": code, "message": message_for(code), "data": {"detail": detail}}
    return {"jsonrpc": "2.0", "error": body, "id": id_}
