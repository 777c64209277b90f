"""The params checks: the name schema is the client package's rule, to the character."""

from __future__ import annotations

import random
import re
import string

import jsonschema
import pytest

from coffer.names import NAME_PATTERN, is_valid_name
from cofferd.errors import InvalidParams
from cofferd.rpc.dispatch.params import NAME_SCHEMA, count, flag, text

EDGES = [
    "a",
    "A" * 128,
    "A" * 129,
    "",
    ".",
    "..",
    ".hidden",
    "-x",
    "_x",
    "a/b",
    "a b",
    "a\x00",
    "é",
    "model-v1.2_final.bin",
    "a\n",  # a JSON Schema "$" must not let a trailing newline through
    "\na",
]


def samples() -> list[str]:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "._-/ \n\x00é"
    drawn = ["".join(rng.choices(alphabet, k=rng.randint(0, 140))) for _ in range(3000)]
    return EDGES + drawn


def test_the_schema_pattern_is_the_client_packages_rule() -> None:
    assert NAME_SCHEMA["pattern"] == f"^{NAME_PATTERN}$"
    pattern = re.compile(NAME_SCHEMA["pattern"])
    validator = jsonschema.Draft202012Validator(NAME_SCHEMA)
    disagree = []
    for value in samples():
        rule = is_valid_name(value)
        if bool(pattern.fullmatch(value)) != rule:
            disagree.append(value)
        # jsonschema searches (re.search), where Python's "$" also matches before
        # a final newline: the one place the two may differ, and cofferd checks
        # names with the rule itself, never with the schema.
        if not value.endswith("\n") and validator.is_valid(value) != rule:
            disagree.append(value)
    assert disagree == []


@pytest.mark.parametrize("value", ["", 3, None, b"x"])
def test_text_refuses_what_is_not_a_non_empty_string(value: object) -> None:
    with pytest.raises(InvalidParams, match="email must be a non-empty string"):
        text(value, "email")
    assert text("x", "email") == "x"


def test_flag_and_count_take_only_their_own_type() -> None:
    assert flag(True, "pin") is True
    assert count(0, "size") == 0
    for bad in (1, "true", None):
        with pytest.raises(InvalidParams, match="pin must be a boolean"):
            flag(bad, "pin")
    for bad in (-1, True, 1.0, "3"):
        with pytest.raises(InvalidParams, match="size must be a non-negative integer"):
            count(bad, "size")
