"""The daemon itself: ``health`` and ``status``.

``status`` is built from the services alone and never waits on the network:
its ``field`` object says what is known (the last exchange's outcome, the last
contact), not what a probe would find; its ``unlock`` member says when the
engine was last checked.
"""

from __future__ import annotations

from typing import Any

from cofferd import __version__
from cofferd.models import UnlockState
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.params import NAME_SCHEMA
from cofferd.rpc.dispatch.services import Services
from cofferd.rpc.dispatch.spec import MethodSpec, array, obj


def health(call: Call, /) -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


def status(call: Call, /) -> dict[str, Any]:
    app = call.app
    return {
        "authenticated": app.api_client().authenticated,
        "model_cache_dir": str(app.settings.cache_dir),
        "upstream_url": app.settings.upstream_url,
        "version": __version__,
        # Never waits: the engine is checked in the background after a
        # restart, and this says when it last was (null: not yet).
        "unlock": {
            "state": app.unlock.state.value,
            "engine_checked_at": app.unlock.engine_checked_at,
        },
        "field": _field(app),
        "cache": app.managed.status(),
        "identity": app.enrollment.status(),
        # "off": whatever the upstream serves is delivered, signed or not.
        "trust": app.settings.trust,
    }


def _field(app: Services) -> dict[str, Any]:
    status = app.field.status()
    return {
        "login_source": app.boot_login.source,
        "device_key": status["records_persistent"],
        **status,
    }


_TIME = {"type": ["number", "null"], "description": "Unix seconds"}
_COUNT = {"type": "integer", "minimum": 0}

#: The ``field`` member of ``status``.
FIELD_STATUS = obj(
    {
        "login_source": {"enum": ["device", "credential", "login call", "none"]},
        "device_key": {"type": "boolean"},
        "upstream_reachable": {"type": ["boolean", "null"]},
        "mode": {"enum": ["online", "offline"]},
        "last_contact": _TIME,
        "trusted_time": _TIME,
        "offline_enabled": {"type": "boolean"},
        "records_persistent": {"type": "boolean"},
        "records": array(
            obj(
                {
                    "folder": {"type": "string"},
                    "filename": {"type": "string"},
                    "version": {"type": "integer"},
                    "lease_expires": _TIME,
                },
                ("folder", "filename", "version", "lease_expires"),
            )
        ),
    },
    (
        "login_source",
        "device_key",
        "upstream_reachable",
        "mode",
        "last_contact",
        "trusted_time",
        "offline_enabled",
        "records_persistent",
        "records",
    ),
)

#: The ``identity`` member of ``status``: null without an identity credential.
IDENTITY_STATUS = {
    "oneOf": [
        {"type": "null"},
        obj(
            {
                "public_key": {
                    "type": "string",
                    "description": "standard base64 of the 32 raw Ed25519 bytes",
                },
                "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                "new": {
                    "type": "boolean",
                    "description": "it replaced an identity that did not open here: enroll again",
                },
                "enrolled": {"type": "boolean"},
                "device_id": {
                    "type": ["string", "null"],
                    "description": "the id the upstream gave it at enrollment",
                },
            },
            ("public_key", "key_id", "new", "enrolled", "device_id"),
        ),
    ]
}

#: The ``cache`` member of ``status``.
CACHE_STATUS = obj(
    {
        "bytes": _COUNT,
        "entries": _COUNT,
        "max_bytes": _COUNT,
        "free_floor": _COUNT,
        "downloads": array(
            obj(
                {
                    "folder": NAME_SCHEMA,
                    "filename": NAME_SCHEMA,
                    "version": _COUNT,
                    "written": _COUNT,
                    "size": _COUNT,
                },
                ("folder", "filename", "version", "written", "size"),
            )
        ),
        "last_uncached": {
            "oneOf": [
                {"type": "null"},
                obj(
                    {
                        "folder": NAME_SCHEMA,
                        "name": NAME_SCHEMA,
                        "version": _COUNT,
                        "size": _COUNT,
                        "reason": {"type": "string"},
                        "at": {"type": "number"},
                    },
                    ("folder", "name", "version", "size", "reason", "at"),
                ),
            ]
        },
        "state_writable": {"type": "boolean"},
        "state_error": {"type": ["string", "null"]},
    },
    (
        "bytes",
        "entries",
        "max_bytes",
        "free_floor",
        "downloads",
        "last_uncached",
        "state_writable",
        "state_error",
    ),
)

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "health",
        health,
        "Whether cofferd serves, and its version.",
        result=obj(
            {"status": {"const": "ok"}, "version": {"type": "string"}}, ("status", "version")
        ),
    ),
    MethodSpec(
        "status",
        status,
        "Login, cache, upstream and unlock state.",
        result=obj(
            {
                "authenticated": {"type": "boolean"},
                "model_cache_dir": {"type": "string"},
                "upstream_url": {"type": "string"},
                "version": {"type": "string"},
                "unlock": obj(
                    {
                        "state": {"enum": [s.value for s in UnlockState]},
                        "engine_checked_at": {"type": ["number", "null"]},
                    },
                    ("state",),
                ),
                "field": FIELD_STATUS,
                "cache": CACHE_STATUS,
                "identity": IDENTITY_STATUS,
                "trust": {
                    "enum": ["required", "off"],
                    "description": "off: releases are delivered unsigned (docs/trust.md)",
                },
            },
            ("authenticated", "model_cache_dir", "upstream_url", "version", "unlock", "field"),
        ),
    ),
)
