"""JSON-RPC 2.0 dispatch: one request line in, one response line (or none) out.

jsonrpcserver does the routing, the params check against each method's
signature, the call and its result (``dispatch_request``). Three things are ours:

- Parsing and the envelope check. jsonrpcserver's ``dispatch_to_response``
  validates every request against a jsonschema by default (about 200 µs here,
  ten times a whole ``health`` call); its ``validator=`` hook avoids that, but
  its outer pipeline (parse and validate as Either monads, batch handling)
  still costs as much as the call it wraps. So the line is parsed here and
  :func:`check_envelope` checks the schema's rules by hand in about a
  microsecond, plus ours: one object per line (no batches, which could not say
  which request an fd belongs to) and params by name; jsonrpcserver then gets
  the checked request.
- The error shape. Every error leaves as ``{"code", "message", "data":
  {"detail"}}``; the library's own errors (parse error, unknown method, wrong
  params) are given a detail here, method errors by :mod:`cofferd.rpc.errors`.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from jsonrpcserver import Error, Success
from jsonrpcserver.dispatcher import create_request, dispatch_request
from oslash.either import Left  # type: ignore[import-untyped]

from coffer.protocol import ErrorCode
from cofferd.rpc.context import Call
from cofferd.rpc.errors import INTERNAL_DETAIL, is_expected, to_rpc_error

log = logging.getLogger("cofferd.rpc")

#: A method: takes the :class:`Call` then params by name, returns a JSON-able dict.
Method = Callable[..., dict[str, Any]]

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


def _wrap(name: str, func: Method) -> Callable[..., Any]:
    """Turn a plain method into a jsonrpcserver one that never leaks an exception."""

    @functools.wraps(func)
    def method(call: Call, *args: Any, **kwargs: Any) -> Any:
        try:
            return Success(func(call, *args, **kwargs))
        except Exception as exc:
            if not is_expected(exc):
                log.exception("%s failed unexpectedly (%s)", name, call.peer)
            err = to_rpc_error(exc)
            return Error(err.code, err.message, {"detail": err.detail})

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


def _to_json(id_: Any, result: Any) -> dict[str, Any]:
    if isinstance(result, Left):
        err = result._error
        data = err.data
        if not (isinstance(data, dict) and "detail" in data):
            data = {"detail": _detail(err.code, data)}
        body = {"code": err.code, "message": err.message, "data": data}
        return {"jsonrpc": "2.0", "error": body, "id": id_}
    return {"jsonrpc": "2.0", "result": result._value.result, "id": id_}


class Dispatcher:
    """The method table and the line-to-line dispatch over it.

    The table is open until serving starts, so a feature module adds its own
    methods with :meth:`add` (e.g. ``unlock``/``unlock_status``).
    """

    def __init__(self, methods: Mapping[str, Method] | None = None) -> None:
        self._methods: dict[str, Callable[..., Any]] = {}
        for name, func in (methods or {}).items():
            self.add(name, func)

    def add(self, name: str, func: Method) -> None:
        if name in self._methods:
            raise ValueError(f"method {name!r} is already registered")
        self._methods[name] = _wrap(name, func)

    @property
    def names(self) -> list[str]:
        return sorted(self._methods)

    def handle(self, line: bytes, call: Call) -> dict[str, Any] | None:
        """The response object for one request line, or None for a notification."""
        try:
            # Decoded first: json.loads would sniff the encoding of bytes each time.
            request = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            code = ErrorCode.PARSE_ERROR
            return error_response(code, "Parse error", _detail(code, exc))
        try:
            check_envelope(request)
        except ValueError:
            return error_response(ErrorCode.INVALID_REQUEST, "Invalid request", ENVELOPE_RULE)
        if request["method"] in self._methods:
            call.method = request["method"]  # for the log line, known names only
        _, result = dispatch_request(self._methods, call, create_request(request))
        if "id" not in request:
            return None
        return _to_json(request["id"], result)


def error_response(code: int, message: str, detail: str, id_: Any = None) -> dict[str, Any]:
    """An error response the transport sends on its own (oversized line, busy)."""
    body = {"code": code, "message": message, "data": {"detail": detail}}
    return {"jsonrpc": "2.0", "error": body, "id": id_}
