"""``unlock`` and ``unlock_status``: thin methods over :class:`cofferd.unlock.UnlockWorkflow`.

``unlock`` ``{"email", "password"}`` → ``{"state": "authenticating"}``, or a
not-found error (detail ``"Encrypted archive not found"``) when there is no
archive, or a conflict while an unlock runs. ``unlock_status`` →
``{"state", "error", "bytes_done", "bytes_total", "images"}``. The password
goes to the workflow's worker and nowhere else: never logged, never echoed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from cofferd.rpc.context import Call
from cofferd.rpc.dispatch import Dispatcher, Method
from cofferd.rpc.errors import InvalidParams
from cofferd.unlock import UnlockWorkflow

if TYPE_CHECKING:
    from cofferd.app import App


def _workflow(call: Call) -> UnlockWorkflow:
    return cast(UnlockWorkflow, cast("App", call.app).unlock)


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidParams(f"{what} must be a non-empty string")
    return value


def unlock(call: Call, /, email: object, password: object) -> dict[str, Any]:
    return _workflow(call).start(_text(email, "email"), _text(password, "password"))


def unlock_status(call: Call, /) -> dict[str, Any]:
    return _workflow(call).status()


METHODS: dict[str, Method] = {"unlock": unlock, "unlock_status": unlock_status}


def register(dispatcher: Dispatcher) -> None:
    """Add ``unlock`` and ``unlock_status`` to the daemon's method table."""
    for name, func in METHODS.items():
        dispatcher.add(name, func)


__all__ = ["METHODS", "register", "unlock", "unlock_status"]
