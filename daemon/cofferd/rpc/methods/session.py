"""The field methods: ``logout``, and the ``field`` object of ``status``.

``status`` never waits on the network: the field object says what is known
(the last exchange's outcome, the last contact), not what a probe would find.
"""

from __future__ import annotations

from typing import Any

from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.services import Services
from cofferd.rpc.dispatch.spec import MethodSpec, obj

_TIME = {"type": ["number", "null"], "description": "Unix seconds"}

FIELD_STATUS = obj(
    {
        "login_source": {"enum": ["credential", "login call", "none"]},
        "device_key": {"type": "boolean"},
        "upstream_reachable": {"type": ["boolean", "null"]},
        "mode": {"enum": ["online", "offline"]},
        "last_contact": _TIME,
        "trusted_time": _TIME,
        "offline_enabled": {"type": "boolean"},
        "records_persistent": {"type": "boolean"},
        "records": {
            "type": "array",
            "items": obj(
                {
                    "folder": {"type": "string"},
                    "filename": {"type": "string"},
                    "version": {"type": "integer"},
                    "lease_expires": _TIME,
                },
                ("folder", "filename", "version", "lease_expires"),
            ),
        },
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


def field_status(app: Services) -> dict[str, Any]:
    status = app.field.status()
    return {
        "login_source": app.boot_login.source,
        "device_key": status["records_persistent"],
        **status,
    }


def logout(call: Call, /) -> dict[str, Any]:
    assert call.services is not None, "a method called without the daemon's services"
    app = call.services
    app.api_client().logout()
    app.boot_login.logged_out()
    erased = app.field.forget()
    return {"status": "ok", "records_erased": erased}


SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "logout",
        logout,
        "Drop the login, the token and every offline record and lease.",
        result=obj(
            {"status": {"const": "ok"}, "records_erased": {"type": "integer", "minimum": 0}},
            ("status", "records_erased"),
        ),
    ),
)
