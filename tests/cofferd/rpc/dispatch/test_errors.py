"""The error boundary: an exception in, the error object a caller sees out."""

from __future__ import annotations

from coffer.protocol import ErrorCode
from cofferd import errors
from cofferd.rpc.dispatch.errors import INTERNAL_DETAIL, is_expected, to_rpc_error


def test_a_wire_error_keeps_its_code_message_and_sentence() -> None:
    err = to_rpc_error(errors.BadName("invalid filename '..'"))
    assert (err.code, err.message, err.detail) == (400, "Bad name", "invalid filename '..'")
    assert to_rpc_error(errors.InvalidParams("bad")).code == ErrorCode.INVALID_PARAMS
    assert to_rpc_error(errors.ShuttingDown("s")).code == ErrorCode.SHUTTING_DOWN
    assert to_rpc_error(errors.NotFound("")).detail == "Not found"  # never an empty sentence
    assert is_expected(errors.Conflict("c"))


def test_a_bug_or_a_local_error_tells_the_caller_nothing() -> None:
    for exc in (
        RuntimeError("/secret/path"),
        errors.SettingsError("x"),
        errors.ListenError("x"),
        errors.PeerGone("x"),
    ):
        err = to_rpc_error(exc)
        assert (err.code, err.message, err.detail) == (-32603, "Internal error", INTERNAL_DETAIL)
        assert not is_expected(exc)
