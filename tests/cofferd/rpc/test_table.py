"""The method table: each spec agrees with its function, and the rules every method keeps."""

from __future__ import annotations

import inspect

import pytest
from jsonschema import Draft202012Validator

from coffer.protocol import ErrorCode
from cofferd.rpc.dispatch.spec import MethodSpec
from cofferd.rpc.table import TABLE

BY_NAME = {spec.name: spec for spec in TABLE}


@pytest.mark.parametrize("spec", TABLE, ids=lambda s: s.name)
def test_params_schema_matches_the_signature(spec: MethodSpec) -> None:
    params = list(inspect.signature(spec.func).parameters.values())[1:]  # after the Call
    assert set(spec.params["properties"]) == {p.name for p in params}
    required = {p.name for p in params if p.default is inspect.Parameter.empty}
    assert set(spec.params.get("required", [])) == required
    for p in params:
        if p.default is not inspect.Parameter.empty:
            assert spec.params["properties"][p.name].get("default") == p.default, p.name
    assert spec.result["type"] == "object"
    Draft202012Validator.check_schema(dict(spec.params))
    Draft202012Validator.check_schema(dict(spec.result))
    assert set(spec.errors) <= set(ErrorCode)


def test_method_names_and_audit_ids_are_unique() -> None:
    names = [s.name for s in TABLE]
    assert len(names) == len(set(names))
    ids = [s.audit.message_id for s in TABLE if s.audit]
    assert len(ids) == len(set(ids))


def test_what_changes_state_for_every_caller_is_an_operators() -> None:
    operators = {s.name for s in TABLE if s.access == "operator"}
    assert operators == {"login", "logout", "enroll", "evict", "prune", "pin", "trust.init"}
    assert BY_NAME["pull"].operator_params == ("pin",)
    # ... and is audited, with who did it.
    assert all(BY_NAME[name].audit for name in operators)


def test_the_byte_and_cache_counters_take_declared_members() -> None:
    assert BY_NAME["load"].traffic == ("out", "size")
    assert BY_NAME["load_memfd"].traffic == ("out", "size")
    assert BY_NAME["upload"].traffic == ("in", "size")
    assert {s.name for s in TABLE if s.cache_hit} == {"load", "load_memfd", "pull"}
