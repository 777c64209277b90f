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
- The boundary: every method is wrapped so that it never raises; its error is
  mapped by :func:`cofferd.rpc.dispatch.errors.to_rpc_error`. A caller who hung up
  (:class:`~cofferd.errors.PeerGone`) is marked on the :class:`Call`, and the
  transport closes the connection without a response.
- The error shape. Every error leaves as ``{"code", "message", "data":
  {"detail"}}``; the library's own errors (parse error, unknown method, wrong
  params) are given a detail here.

Every line ends at the :class:`~cofferd.rpc.dispatch.observer.CallObserver`, if one is
given: the call's log line, metrics and audit record. For an audited method
(a name in :data:`cofferd.observe.audit.MESSAGE_IDS`) the wrapper fills
``call.audit_fields`` from the resource params (folder and name only, never
another param) and the result; every other call allocates nothing for it.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jsonrpcserver import Error, Success, dispatch_to_serializable

from coffer.protocol import ErrorCode
from cofferd.errors import PeerGone
from cofferd.observe.audit import MESSAGE_IDS
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
# Result members an audit record takes, and the audit field each becomes.
_RESULT_FIELDS = (
    ("folder", "folder", str),
    ("filename", "name", str),
    ("name", "name", str),
    ("version", "version", int),
    ("size", "bytes", int),
    ("bytes", "bytes", int),
    ("from_cache", "from_cache", bool),
)


def _audit_params(kwargs: Mapping[str, Any], folder_default: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    folder = kwargs.get("folder", folder_default)
    name = kwargs.get("filename", kwargs.get("name"))
    if type(folder) is str and _NAME.fullmatch(folder):
        fields["folder"] = folder
    if type(name) is str and _NAME.fullmatch(name):
        fields["name"] = name
    return fields


def _audit_result(fields: dict[str, Any], result: Any) -> None:
    if type(result) is not dict:
        return
    # The result says what was done: it wins over the params.
    for key, field, kind in _RESULT_FIELDS:
        value = result.get(key)
        if type(value) is kind:
            fields[field] = value


def _wrap(spec: MethodSpec) -> Callable[..., Any]:
    """Turn a plain method into a jsonrpcserver one that never raises."""
    func, name = spec.func, spec.name
    audited = name in MESSAGE_IDS
    folder_default = spec.params.get("properties", {}).get("folder", {}).get("default")

    @functools.wraps(func)
    def method(call: Call, *args: Any, **kwargs: Any) -> Any:
        call.method = name  # for the call log: set only for known names
        if audited:
            call.audit_fields = _audit_params(kwargs, folder_default)
        try:
            result = func(call, *args, **kwargs)
        except PeerGone as exc:
            log.info("%s: the caller hung up (%s): %s", name, call.peer, exc)
            call.hung_up = True
            return Error(int(ErrorCode.INTERNAL_ERROR), "Hung up", {"detail": str(exc)})
        except Exception as exc:
            if not is_expected(exc):
                log.exception("%s failed unexpectedly (%s)", name, call.peer)
            err = to_rpc_error(exc)
            call.error_code = err.code
            return Error(err.code, err.message, {"detail": err.detail})
        if audited and call.audit_fields is not None:
            _audit_result(call.audit_fields, result)
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
    """The method table, fixed at construction, and the line-to-line dispatch over it."""

    def __init__(
        self,
        specs: Iterable[MethodSpec],
        observer: CallObserver | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._methods: dict[str, Callable[..., Any]] = {}
        self._observer = observer
        self._clock = clock
        self.specs: tuple[MethodSpec, ...] = tuple(specs)
        for spec in self.specs:
            if spec.name in self._methods:
                raise ValueError(f"method {spec.name!r} is in the table twice")
            self._methods[spec.name] = _wrap(spec)

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
                if not (isinstance(data, dict) and "detail" in data):
                    error["data"] = {"detail": _detail(code, data)}
        if self._observer is not None:
            self._observer.done(call, self._clock() - started, code)
        return response


def error_response(code: int, message: str, detail: str, id_: Any = None) -> dict[str, Any]:
    """An error response the transport sends on its own (oversized line, busy)."""
    body = {"code": code, "message": message, "data": {"detail": detail}}
    return {"jsonrpc": "2.0", "error": body, "id": id_}
