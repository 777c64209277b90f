"""Trust: pin the root, say what is verified, and the publisher's two calls.

``trust.init`` pins the root of trust (an operator's: it decides what every
load delivers); ``trust.status`` says what is pinned and verified.
``trust.metadata`` and ``trust.publish`` let a publisher's ``coffer`` sign a
release in its own process: it fetches the current metadata through cofferd
(verified against the pinned root), signs, and hands the signed metadata
back to publish; the publisher's private key never crosses the socket.
"""

from __future__ import annotations

from typing import Any

from coffer.protocol import ErrorCode
from cofferd.errors import InvalidParams
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.params import flag, text
from cofferd.rpc.dispatch.spec import Audit, MethodSpec, array, obj

_ROLE = {
    "type": "string",
    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    "description": "a delegated role, e.g. publishers",
}
_HEX = {"type": "string", "pattern": "^[0-9a-f]+$"}
_ROLE_STATE = {
    "oneOf": [
        {"type": "null"},
        obj(
            {"version": {"type": "integer", "minimum": 1}, "expires": {"type": "string"}},
            ("version", "expires"),
        ),
    ]
}
_REFRESH = {
    "oneOf": [
        {"type": "null"},
        obj(
            {
                "at": {"type": "number", "description": "Unix seconds"},
                "ok": {"type": "boolean"},
                "rule": {"type": ["string", "null"]},
                "detail": {"type": ["string", "null"]},
            },
            ("at", "ok", "rule", "detail"),
        ),
    ]
}


def init(call: Call, /, root: object, replace: object = False) -> dict[str, Any]:
    return call.app.trust.init(text(root, "root"), replace=flag(replace, "replace"))


def status(call: Call, /) -> dict[str, Any]:
    return call.app.trust.status()


def metadata(call: Call, /, role: object = "publishers") -> dict[str, Any]:
    return call.app.trust.metadata(text(role, "role"))


def publish(call: Call, /, role: object, metadata: object) -> dict[str, Any]:
    if not isinstance(metadata, str) or not metadata:
        raise InvalidParams("metadata must be the signed metadata's JSON text")
    return call.app.trust.publish(text(role, "role"), metadata)


_REFRESH_ERRORS = (
    ErrorCode.UNTRUSTED,
    ErrorCode.UPSTREAM_UNAVAILABLE,
    ErrorCode.UPSTREAM_BAD_DATA,
)

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "trust.init",
        init,
        "Pin the root of trust (root.json); another root only with replace.",
        params=obj(
            {
                "root": {"type": "string", "description": "the root.json text"},
                "replace": {
                    "type": "boolean",
                    "default": False,
                    "description": "replace another pinned root: erases the trust metadata"
                    " and the versions seen",
                },
            },
            ("root",),
        ),
        result=obj(
            {
                "version": {"type": "integer", "minimum": 1},
                "key_ids": array(_HEX),
                "replaced": {"type": "boolean"},
            },
            ("version", "key_ids", "replaced"),
        ),
        errors=(ErrorCode.BAD_REQUEST, ErrorCode.CONFLICT, ErrorCode.STATE_UNWRITABLE),
        access="operator",
        audit=Audit("1c6747252c2141f8809cb3ff25c2c9d8"),
    ),
    MethodSpec(
        "trust.status",
        status,
        "The trust mode, the pinned root, the last refresh and each top-level role.",
        result=obj(
            {
                "mode": {"enum": ["required", "off"]},
                "root": {
                    "oneOf": [
                        {"type": "null"},
                        obj(
                            {"version": {"type": "integer"}, "key_ids": array(_HEX)},
                            ("version", "key_ids"),
                        ),
                    ]
                },
                "last_refresh": _REFRESH,
                "roles": obj(
                    {r: _ROLE_STATE for r in ("root", "timestamp", "snapshot", "targets")},
                    ("root", "timestamp", "snapshot", "targets"),
                ),
            },
            ("mode", "root", "last_refresh", "roles"),
        ),
    ),
    MethodSpec(
        "trust.metadata",
        metadata,
        "The verified top-level targets and a delegated role's current metadata, to sign over.",
        params=obj({"role": {**_ROLE, "default": "publishers"}}),
        result=obj(
            {
                "targets": {"type": "string"},
                "role": {"type": ["string", "null"]},
                "role_version": {
                    "type": ["integer", "null"],
                    "description": "the role's version in the verified snapshot (null: never"
                    " published); with role null, its text did not verify (a revoked key"
                    " signed it): the next version starts afresh",
                },
            },
            ("targets", "role"),
        ),
        errors=(ErrorCode.BAD_REQUEST, *_REFRESH_ERRORS),
    ),
    MethodSpec(
        "trust.publish",
        publish,
        "Publish a delegated role's metadata, signed by the publisher, to the upstream.",
        params=obj(
            {"role": _ROLE, "metadata": {"type": "string", "description": "the signed JSON"}},
            ("role", "metadata"),
        ),
        result=obj(
            {"role": {"type": "string"}, "version": {"type": ["integer", "null"]}},
            ("role", "version"),
        ),
        errors=(
            ErrorCode.BAD_REQUEST,
            ErrorCode.UNAUTHORIZED,
            ErrorCode.FORBIDDEN,
            ErrorCode.NOT_FOUND,
            ErrorCode.CONFLICT,
            ErrorCode.TOO_LARGE,
            ErrorCode.UPSTREAM_UNAVAILABLE,
            ErrorCode.UPSTREAM_BAD_DATA,
        ),
        audit=Audit("f634a9fb521246a8972c2379f6de9c15"),
    ),
)
