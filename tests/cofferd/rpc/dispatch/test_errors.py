"""The one wire table: found along the MRO, complete, order-free; local errors never on the wire."""

from __future__ import annotations

import inspect
import random

import pytest
from jsonschema import Draft202012Validator

from coffer.protocol import ErrorCode
from cofferd import errors
from cofferd.rpc.dispatch.errors import to_rpc_error
from cofferd.rpc.table import TABLE

CLASSES = [
    c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.CofferError)
]
WIRE_CLASSES = [
    c for c in CLASSES if not issubclass(c, errors.LocalError) and c is not errors.CofferError
]


def test_every_wire_error_has_a_row_and_no_local_one_does() -> None:
    for cls in WIRE_CLASSES:
        assert errors.wire_code(cls("x")) is not None, cls
    for cls in (errors.SettingsError, errors.ListenError, errors.PeerGone):
        assert errors.wire_code(cls("x")) is None
        assert to_rpc_error(cls("x")).code == ErrorCode.INTERNAL_ERROR
    assert not set(errors.WIRE) & {c for c in CLASSES if issubclass(c, errors.LocalError)}


def test_row_order_does_not_matter() -> None:
    rows = list(errors.WIRE.items())
    for seed in range(20):
        random.Random(seed).shuffle(rows)
        shuffled = dict(rows)
        for cls in WIRE_CLASSES:
            assert errors.wire_code(cls("x"), shuffled) == errors.wire_code(cls("x")), cls


def test_nearest_ancestor_wins() -> None:
    class Sub(errors.BadName):
        pass

    assert errors.wire_code(Sub("x")) == (ErrorCode.BAD_REQUEST, "Bad name")
    assert to_rpc_error(errors.InvalidParams("bad")).code == ErrorCode.INVALID_PARAMS
    assert to_rpc_error(errors.ShuttingDown("s")).code == ErrorCode.SHUTTING_DOWN
    assert to_rpc_error(RuntimeError("/secret")).detail.find("secret") < 0


def test_settings_error_is_not_a_bad_request() -> None:
    assert not issubclass(errors.SettingsError, errors.BadRequest)


@pytest.mark.parametrize("spec", TABLE, ids=lambda s: s.name)
def test_params_schema_matches_the_signature(spec) -> None:
    params = list(inspect.signature(spec.func).parameters.values())[1:]  # after the Call
    assert set(spec.params["properties"]) == {p.name for p in params}
    required = {p.name for p in params if p.default is inspect.Parameter.empty}
    assert set(spec.params.get("required", [])) == required
    assert spec.result["type"] == "object"
    Draft202012Validator.check_schema(dict(spec.params))
    Draft202012Validator.check_schema(dict(spec.result))
    assert set(spec.errors) <= set(ErrorCode)


def test_method_names_are_unique() -> None:
    names = [s.name for s in TABLE]
    assert len(names) == len(set(names))
