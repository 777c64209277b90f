"""``MethodSpec``: what a spec names must be in its schemas, checked when it is made."""

from __future__ import annotations

from typing import Any

import pytest

from coffer.protocol import ErrorCode
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.spec import COMMON_ERRORS, Audit, MethodSpec, array, obj


def _m(call: Call, /) -> dict[str, Any]:
    return {}


def test_a_spec_naming_a_member_its_schema_lacks_is_refused() -> None:
    # Renaming a result member without its spec must fail loudly, not quiet a counter.
    with pytest.raises(ValueError, match="no result member 'size'"):
        MethodSpec("m", _m, "m", result=obj({"bytes": {}}), traffic=("out", "size"))
    with pytest.raises(ValueError, match="no result member 'filename'"):
        MethodSpec(
            "m",
            _m,
            "m",
            result=obj({"name": {}}),
            audit=Audit("0" * 32, result={"name": "filename"}),
        )
    with pytest.raises(ValueError, match="no param 'pin'"):
        MethodSpec("m", _m, "m", operator_params=("pin",))
    with pytest.raises(ValueError, match="MESSAGE_ID"):
        Audit("not-an-id")


def test_an_operators_method_says_it_may_answer_forbidden() -> None:
    open_ = MethodSpec("m", _m, "m", errors=(ErrorCode.NOT_FOUND,))
    guarded = MethodSpec("m", _m, "m", access="operator")
    assert open_.all_errors == tuple(sorted({ErrorCode.NOT_FOUND, *COMMON_ERRORS}))
    assert not open_.guarded
    assert guarded.guarded
    assert ErrorCode.FORBIDDEN in guarded.all_errors


def test_schema_helpers() -> None:
    assert obj({"a": {}}, ("a",)) == {
        "type": "object",
        "properties": {"a": {}},
        "additionalProperties": False,
        "required": ["a"],
    }
    assert array({"type": "string"}) == {"type": "array", "items": {"type": "string"}}
