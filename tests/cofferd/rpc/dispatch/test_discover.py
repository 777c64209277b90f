"""``rpc.discover``: the OpenRPC document, checked against the OpenRPC meta-schema."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import referencing.jsonschema

from coffer.protocol import ErrorCode
from cofferd.rpc.dispatch.discover import DISCOVER, document
from cofferd.rpc.table import TABLE
from fixtures.daemon import CofferdProcess

META_SCHEMA = Path(__file__).parents[3] / "data" / "openrpc" / "meta-schema.json"


def meta_validator() -> jsonschema.protocols.Validator:
    """The vendored meta-schema, its one remote ``$ref`` (the JSON Schema meta-schema
    of json-schema.tools, derived from draft-07) resolved locally, never fetched."""
    meta = json.loads(META_SCHEMA.read_text())
    draft7 = referencing.jsonschema.DRAFT7.create_resource(jsonschema.Draft7Validator.META_SCHEMA)
    registry: referencing.Registry[Any] = referencing.Registry().with_resources(
        [("https://meta.json-schema.tools", draft7), ("https://meta.json-schema.tools/", draft7)]
    )
    return jsonschema.Draft7Validator(meta, registry=registry)


def test_the_document_is_valid_openrpc() -> None:
    doc = json.loads(json.dumps(document(TABLE)))  # what a caller receives
    errors = list(meta_validator().iter_errors(doc))
    assert not errors, errors[0].message
    assert doc["openrpc"] in ("1.2.6", "1.3.2")
    assert doc["info"]["title"] == "cofferd"


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["methods"][0].pop("params"),
        lambda d: d["methods"][0].update(paramStructure="by-nothing"),
        lambda d: d["methods"][0]["errors"].append({"code": "404"}),
        lambda d: d.update(openrpc="9.9.9"),
    ],
)
def test_the_meta_schema_check_catches_a_broken_document(
    breakage: Callable[[dict[str, Any]], None],
) -> None:
    doc = copy.deepcopy(document(TABLE))
    breakage(doc)
    assert list(meta_validator().iter_errors(doc))


def test_every_schema_in_it_is_a_valid_json_schema() -> None:
    for method in document(TABLE)["methods"]:
        schemas = [p["schema"] for p in method["params"]] + [method["result"]["schema"]]
        for schema in schemas:
            jsonschema.validators.validator_for(schema).check_schema(schema)


def test_a_bad_schema_is_caught() -> None:
    bad = {"type": "object", "properties": {"x": {"type": "integr"}}}
    with pytest.raises(jsonschema.SchemaError):
        jsonschema.validators.validator_for(bad).check_schema(bad)


def test_it_describes_the_table_the_dispatcher_serves() -> None:
    doc = document(TABLE)
    by_name = {m["name"]: m for m in doc["methods"]}
    assert list(by_name) == [spec.name for spec in TABLE]
    assert DISCOVER in by_name
    assert "metrics" in by_name
    for spec in TABLE:
        m = by_name[spec.name]
        assert m["paramStructure"] == "by-name"
        assert m["x-coffer-fd"] == spec.fd
        assert m["x-coffer-audit"] == (spec.audit.message_id if spec.audit else None)
        assert m["x-coffer-access"] == spec.access
        assert m["x-coffer-operator-params"] == list(spec.operator_params)
        assert {p["name"] for p in m["params"]} == set(spec.params.get("properties", {}))
        required = {p["name"] for p in m["params"] if p["required"]}
        assert required == set(spec.params.get("required", ()))
        codes = {e["code"] for e in m["errors"]}
        assert codes == {int(c) for c in spec.all_errors}
        # login and trust.publish relay the upstream's own 403 (this account may not).
        assert (ErrorCode.FORBIDDEN in codes) == spec.guarded or spec.name in (
            "login",
            "trust.publish",
        )
        assert all(e["message"] for e in m["errors"])
    assert by_name["load"]["x-coffer-fd"] == "takes"
    assert by_name["load"]["x-coffer-audit"] == "57ceaf16529b48b6a928cb96acdcfad8"
    assert by_name["health"]["x-coffer-audit"] is None
    assert by_name["logout"]["x-coffer-access"] == "operator"
    assert by_name["load"]["x-coffer-access"] == "any"
    assert by_name["pull"]["x-coffer-operator-params"] == ["pin"]
    anywhere = {e["code"] for e in doc["x-coffer-connection-errors"]}
    assert {ErrorCode.BUSY, ErrorCode.TOO_LARGE, ErrorCode.UNAUTHORIZED} <= anywhere


def test_the_daemon_serves_the_document(cofferd: Callable[..., CofferdProcess]) -> None:
    daemon = cofferd()
    served = daemon.call(DISCOVER)["result"]
    assert served == json.loads(json.dumps(document(TABLE)))
    assert not list(meta_validator().iter_errors(served))
