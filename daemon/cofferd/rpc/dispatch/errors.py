"""The error boundary: an exception in, the JSON-RPC error object a caller sees out.

Every error a caller sees is ``{"code", "message", "data": {"detail"}}``: the
code and the message come from :data:`cofferd.errors.WIRE`, the one table, the
detail is the exception's sentence a person can act on. An error outside the
tree is a bug: the caller gets a fixed detail and the traceback goes to the
log, so internals never reach the socket. Local errors
(:class:`cofferd.errors.LocalError`) are not meant to get here; one that does
is answered like a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cofferd import errors

INTERNAL_DETAIL = "cofferd failed unexpectedly; its log has the details"


@dataclass(frozen=True)
class RpcError:
    """A JSON-RPC error object: code, short message, and a detail for people."""

    code: int
    message: str
    detail: str
    #: Members of ``data`` beside the detail (an :class:`~cofferd.errors.Untrusted`'s rule).
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> dict[str, Any]:
        return {"detail": self.detail, **self.extra}

    def __str__(self) -> str:
        return f"{self.message}: {self.detail}"


def to_rpc_error(exc: BaseException) -> RpcError:
    """The error object for ``exc``; anything without a wire row is an opaque internal error."""
    row = errors.wire_code(exc)
    if row is None:
        code, message = errors.WIRE[errors.InternalError]
        return RpcError(int(code), message, INTERNAL_DETAIL)
    code, message = row
    extra = getattr(exc, "wire_data", None)
    return RpcError(int(code), message, str(exc) or message, dict(extra or {}))


def is_expected(exc: BaseException) -> bool:
    """Whether ``exc`` is a wire error of the tree (logged briefly, not as a bug)."""
    return errors.wire_code(exc) is not None
