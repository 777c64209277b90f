"""``rpc.discover``: the OpenRPC document of the socket API, generated from the method table.

The document (OpenRPC 1.3.2, https://spec.open-rpc.org) is built from the
same :class:`~cofferd.rpc.dispatch.spec.MethodSpec` list the dispatcher serves, so the
description and the behaviour cannot drift; ``rpc.discover`` describes itself
too. What OpenRPC has no word for goes into ``x-`` extensions:

- ``x-coffer-fd`` per method: ``takes`` (one fd may come with the request),
  ``returns`` (one comes back with the response) or ``none``;
- ``x-coffer-access`` per method: ``any`` member of the socket's group may
  call it, or only an ``operator`` (the uids of ``login_uids``; others get
  403); ``x-coffer-operator-params``: params that make a call an operator's
  when true (``pull``'s ``pin``);
- ``x-coffer-audit`` per method: the ``MESSAGE_ID`` of the audit record each
  call writes, or null;
- ``x-coffer-connection-errors`` at the top: errors the transport may send on
  any connection, outside any method (``id`` null): refused peer, busy, a line
  over the limit, shutting down.

Errors are ``{"code", "message"}``; every error a method answers also carries
``data.detail``, a sentence for people (see docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from coffer.protocol import MAX_LINE_BYTES, ErrorCode
from cofferd import __version__
from cofferd.errors import message_for
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.spec import MethodSpec

OPENRPC_VERSION = "1.3.2"
DISCOVER = "rpc.discover"

#: Errors the transport answers on its own, for no method in particular.
CONNECTION_ERRORS: tuple[ErrorCode, ...] = (
    ErrorCode.PARSE_ERROR,
    ErrorCode.INVALID_REQUEST,
    ErrorCode.METHOD_NOT_FOUND,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.TOO_LARGE,
    ErrorCode.BUSY,
    ErrorCode.SHUTTING_DOWN,
)


def _errors(codes: Sequence[ErrorCode]) -> list[dict[str, Any]]:
    return [{"code": int(c), "message": message_for(c)} for c in sorted(set(codes))]


def _params(schema: Any) -> list[dict[str, Any]]:
    required = set(schema.get("required", ()))
    return [
        {"name": name, "required": name in required, "schema": dict(prop)}
        for name, prop in schema.get("properties", {}).items()
    ]


def method_object(spec: MethodSpec) -> dict[str, Any]:
    """One OpenRPC Method Object."""
    return {
        "name": spec.name,
        "summary": spec.summary,
        "paramStructure": "by-name",
        "params": _params(spec.params),
        "result": {"name": f"{spec.name}.result", "schema": dict(spec.result)},
        "errors": _errors(spec.all_errors),
        "x-coffer-fd": spec.fd,
        "x-coffer-access": spec.access,
        "x-coffer-operator-params": list(spec.operator_params),
        "x-coffer-audit": spec.audit.message_id if spec.audit else None,
    }


def document(specs: Sequence[MethodSpec]) -> dict[str, Any]:
    """The OpenRPC document describing ``specs``."""
    return {
        "openrpc": OPENRPC_VERSION,
        "info": {
            "title": "cofferd",
            "version": __version__,
            "description": (
                "JSON-RPC 2.0 on a Unix stream socket: one request object per line, params "
                f"by name, lines of at most {MAX_LINE_BYTES} bytes; a file descriptor rides "
                "with a request line as SCM_RIGHTS (see x-coffer-fd)."
            ),
        },
        "methods": [method_object(spec) for spec in specs],
        "x-coffer-connection-errors": _errors(CONNECTION_ERRORS),
    }


#: The document is a JSON object whose shape the meta-schema gives; the
#: result schema says only what a caller can rely on without it.
_DOCUMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "openrpc": {"type": "string"},
        "info": {"type": "object"},
        "methods": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["openrpc", "info", "methods"],
}


def with_discover(specs: Sequence[MethodSpec]) -> tuple[MethodSpec, ...]:
    """``specs`` and an ``rpc.discover`` answering their document (its own entry included)."""
    holder: list[dict[str, Any]] = []

    def discover(call: Call, /) -> dict[str, Any]:
        return holder[0]

    spec = MethodSpec(
        DISCOVER,
        discover,
        "This API as an OpenRPC document, generated from the table cofferd serves.",
        result=_DOCUMENT_SCHEMA,
    )
    table = (*specs, spec)
    holder.append(document(table))
    return table
