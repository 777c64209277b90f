"""cofferd's login to the upstream: ``login`` and ``logout``.

Both change the identity every caller uses, so both are an operator's
(``access="operator"``: the dispatcher refuses other uids with Forbidden).
``login`` keeps the credentials in memory (a login as someone else than
the identity in use erases the offline records that identity obtained);
``logout`` drops the login, the token and every offline record and lease,
and the device's own identity (if enrolled) is used again. ``enroll``
registers the device's key with an enrollment token; the token is never
logged nor audited.
"""

from __future__ import annotations

from typing import Any

from coffer.protocol import ErrorCode
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.params import CREDENTIALS, text
from cofferd.rpc.dispatch.spec import Audit, MethodSpec, obj


def login(call: Call, /, email: object, password: object) -> dict[str, Any]:
    # The upstream decides; its refusal is Unauthorized (401), the same for a
    # wrong email as for a wrong password, and leaves the working login in place.
    app = call.app
    client = app.api_client()
    before = client.subject
    client.login(text(email, "email"), text(password, "password"))
    app.boot_login.login_called()
    if before is not None and before != client.subject:
        app.field.forget()  # another identity: the records of the one before are not its
    return {"status": "ok"}


def logout(call: Call, /) -> dict[str, Any]:
    app = call.app
    app.api_client().logout()
    app.boot_login.logged_out()
    erased = app.field.forget()
    return {"status": "ok", "records_erased": erased}


def enroll(call: Call, /, token: object) -> dict[str, Any]:
    # The upstream decides; a token it refuses (unknown, spent, expired) is
    # Unauthorized, and the device stays as it was.
    app = call.app
    device_id, role = app.enrollment.enroll(app.api_client(), text(token, "token"))
    app.enrolled()
    return {"status": "ok", "device_id": device_id, "role": role}


SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "login",
        login,
        "Log cofferd in to the upstream; the credentials stay in memory.",
        params=CREDENTIALS,
        result=obj({"status": {"const": "ok"}}, ("status",)),
        errors=(
            ErrorCode.UNAUTHORIZED,
            ErrorCode.FORBIDDEN,
            ErrorCode.UPSTREAM_UNAVAILABLE,
            ErrorCode.UPSTREAM_BAD_DATA,
        ),
        access="operator",
        audit=Audit("6e1144617e614150921f039e5557b6f7"),
    ),
    MethodSpec(
        "logout",
        logout,
        "Drop the login, the token and every offline record and lease.",
        result=obj(
            {"status": {"const": "ok"}, "records_erased": {"type": "integer", "minimum": 0}},
            ("status", "records_erased"),
        ),
        errors=(ErrorCode.STATE_UNWRITABLE,),
        access="operator",
        audit=Audit("fe5c9787b1bc4a8dbfb2167ae02f5886"),
    ),
    MethodSpec(
        "enroll",
        enroll,
        "Enroll this device's key with the upstream using an enrollment token.",
        params=obj(
            {"token": {"type": "string", "description": "the enrollment token (never logged)"}},
            ("token",),
        ),
        result=obj(
            {
                "status": {"const": "ok"},
                "device_id": {"type": "string"},
                "role": {"type": "string"},
            },
            ("status", "device_id", "role"),
        ),
        errors=(
            ErrorCode.BAD_REQUEST,
            ErrorCode.UNAUTHORIZED,
            ErrorCode.UPSTREAM_UNAVAILABLE,
            ErrorCode.UPSTREAM_BAD_DATA,
            ErrorCode.STATE_UNWRITABLE,
        ),
        access="operator",
        audit=Audit("fec4a44ad5054560981f0c5a7caddedc"),
    ),
)
