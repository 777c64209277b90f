"""``unlock`` and ``unlock_status``: thin methods over the unlock workflow.

``unlock`` ``{"email", "password"}`` → ``{"state": "authenticating"}``, or a
not-found error (detail ``"Encrypted archive not found"``) when there is no
archive, or a conflict while an unlock runs. ``unlock_status`` →
``{"state", "error", "bytes_done", "bytes_total", "images"}``. The password
goes to the workflow's worker and nowhere else: never logged, never echoed.
"""

from __future__ import annotations

from typing import Any

from coffer.protocol import ErrorCode
from cofferd.models import UnlockState
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.params import CREDENTIALS, text
from cofferd.rpc.dispatch.spec import Audit, MethodSpec, obj


def unlock(call: Call, /, email: object, password: object) -> dict[str, Any]:
    return call.app.unlock.start(text(email, "email"), text(password, "password"))


def unlock_status(call: Call, /) -> dict[str, Any]:
    return call.app.unlock.status()


_STATE = {"enum": [s.value for s in UnlockState]}

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "unlock",
        unlock,
        "Start loading the device's encrypted Docker images; watch with unlock_status.",
        params=CREDENTIALS,
        result=obj({"state": {"const": UnlockState.AUTHENTICATING.value}}, ("state",)),
        errors=(ErrorCode.BAD_REQUEST, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
        audit=Audit("0398e5987c1f4ba6a2849fdd60e2feab"),
    ),
    MethodSpec(
        "unlock_status",
        unlock_status,
        "Where the last unlock is: state, error, progress, images loaded.",
        result=obj(
            {
                "state": _STATE,
                "error": {"type": ["string", "null"]},
                "bytes_done": {"type": "integer", "minimum": 0},
                "bytes_total": {"type": "integer", "minimum": 0},
                "images": {"type": "array", "items": {"type": "string"}},
            },
            ("state", "error", "bytes_done", "bytes_total", "images"),
        ),
    ),
)

__all__ = ["SPECS", "unlock", "unlock_status"]
