"""One entry of the method table: a method, its params and result as JSON Schema, its errors.

The table (:data:`cofferd.rpc.table.TABLE`) is a list of these and the single
source the dispatcher is built from; a description of the API (OpenRPC's
``rpc.discover``) is generated from the same list, so the two cannot drift.
Schemas are JSON Schema draft 2020-12 as plain dicts.

Audited methods are not marked here: a method is audited when its name has a
``MESSAGE_ID`` in :data:`cofferd.observe.audit.MESSAGE_IDS`, the one list of
audit record kinds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from coffer.protocol import ErrorCode

#: A method: takes the :class:`~cofferd.rpc.dispatch.context.Call` then params by name,
#: returns a JSON-able dict.
Method = Callable[..., dict[str, Any]]

#: Errors any method can answer: the envelope and params checks, a bug, a stop.
COMMON_ERRORS: tuple[ErrorCode, ...] = (
    ErrorCode.INVALID_PARAMS,
    ErrorCode.INTERNAL_ERROR,
    ErrorCode.SHUTTING_DOWN,
)


def obj(
    properties: Mapping[str, Any] | None = None, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A closed object schema: exactly these properties, these required."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": dict(properties or {}),
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


@dataclass(frozen=True)
class MethodSpec:
    """A method of the socket API, as data."""

    name: str
    func: Method
    summary: str
    #: The params object (by name); its property names are the function's
    #: parameters after the Call, ``required`` those without a default.
    params: Mapping[str, Any] = field(default_factory=obj)
    result: Mapping[str, Any] = field(default_factory=obj)
    #: Application codes this method may answer, beyond :data:`COMMON_ERRORS`.
    errors: tuple[ErrorCode, ...] = ()
    #: ``takes``: one fd may come with the request (see the method); ``returns``:
    #: one comes back with the response; ``none``: an fd that comes is closed unused.
    fd: Literal["none", "takes", "returns"] = "none"
    #: Which way the result's ``size`` flows, for the byte counters: ``out`` to
    #: the caller (load), ``in`` from the caller (upload), ``none``.
    traffic: Literal["none", "in", "out"] = "none"
