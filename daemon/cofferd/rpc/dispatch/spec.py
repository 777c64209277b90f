"""One entry of the method table: everything the daemon knows about a method, as data.

The table (:data:`cofferd.rpc.table.TABLE`) is a list of these and the single
source the dispatcher, the observer and ``rpc.discover`` are built from: the
params and result as JSON Schema (draft 2020-12, plain dicts), the errors, the
fd rule, who may call, the audit record kind (its ``MESSAGE_ID``) and which
params and result members the audit record and the byte and cache counters
take. Every member named is checked against the schemas when the spec is made,
so renaming a result member without its spec fails at import, never quietly.
"""

from __future__ import annotations

import re
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


#: The fields of an audit record that a call's params or result fill.
RecordField = Literal["folder", "name", "version", "bytes"]

_MESSAGE_ID = re.compile(r"[0-9a-f]{32}")


def array(items: Mapping[str, Any]) -> dict[str, Any]:
    """An array schema, every item of schema ``items``."""
    return {"type": "array", "items": dict(items)}


@dataclass(frozen=True)
class Audit:
    """A method whose every call writes an audit record (:mod:`cofferd.observe.audit`)."""

    #: The record kind's journal ``MESSAGE_ID``: 128 bits, made once (uuid4)
    #: and never changed, as systemd's catalog ids are.
    message_id: str
    #: Record field → the param that fills it (only if it passes the name rule).
    params: Mapping[RecordField, str] = field(default_factory=dict)
    #: Record field → the result member that fills it; the result wins over
    #: the params, since it says what was done.
    result: Mapping[RecordField, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _MESSAGE_ID.fullmatch(self.message_id):
            raise ValueError(f"MESSAGE_ID must be 32 lowercase hex digits: {self.message_id!r}")


#: Who may call: ``any`` member of the socket's group, or only an ``operator``
#: (the uids of the setting ``login_uids``); the dispatcher refuses others
#: with Forbidden (403) before the method runs.
Access = Literal["any", "operator"]


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
    #: Who may call (:data:`Access`).
    access: Access = "any"
    #: Params that make a call an operator's when they come true (``pull``'s
    #: ``pin``): the method is open to all, that use of it is not.
    operator_params: tuple[str, ...] = ()
    audit: Audit | None = None
    #: The byte counters: which way the bytes flow (``out`` to the caller,
    #: ``in`` from it) and the result member that counts them.
    traffic: tuple[Literal["in", "out"], str] | None = None
    #: The result member (boolean) the cache hit and miss counters take.
    cache_hit: str | None = None

    @property
    def guarded(self) -> bool:
        """Whether some call of it is an operator's only."""
        return self.access == "operator" or bool(self.operator_params)

    @property
    def all_errors(self) -> tuple[ErrorCode, ...]:
        """Every code it may answer: its own, the common ones, Forbidden if guarded."""
        guard = (ErrorCode.FORBIDDEN,) if self.guarded else ()
        return tuple(sorted({*self.errors, *COMMON_ERRORS, *guard}))

    def __post_init__(self) -> None:
        params = set(self.params.get("properties", {}))
        result = set(self.result.get("properties", {}))
        named = {
            "param": [
                *self.operator_params,
                *(self.audit.params.values() if self.audit else ()),
            ],
            "result member": [
                *(self.audit.result.values() if self.audit else ()),
                *((self.traffic[1],) if self.traffic else ()),
                *((self.cache_hit,) if self.cache_hit else ()),
            ],
        }
        for kind, names in named.items():
            have = params if kind == "param" else result
            for name in names:
                if name not in have:
                    raise ValueError(f"{self.name}: no {kind} {name!r} in its schema")
