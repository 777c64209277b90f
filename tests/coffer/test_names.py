"""The name rule of coffer.names, which the client, cofferd and the reference upstream share."""

from __future__ import annotations

import pytest

from coffer.names import BadName, check_name, is_valid_name


@pytest.mark.parametrize(
    "name", ["a", "model.bin", "Model-1_2.onnx", "0", "x" * 128, "a..b", "llama-3.1-8b.gguf"]
)
def test_valid_names(name: str) -> None:
    assert is_valid_name(name)
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".hidden",
        "-flag",
        "_x",
        "a/b",
        "../etc/passwd",
        "a\\b",
        "a\x00b",
        "a\nb",
        "a\tb",
        "a b",
        "x" * 129,
        "modèle",
        "a\u2215b",  # division slash, a look-alike of "/"
        "a\x7f",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(BadName, match="invalid folder"):
        check_name(name, "folder")


@pytest.mark.parametrize("value", [None, 3, b"bytes", ["a"]])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(BadName):
        check_name(value)


def test_message_shows_control_characters_escaped() -> None:
    with pytest.raises(BadName) as info:
        check_name("a\nb\x1b[31m")
    message = str(info.value)
    assert "\n" not in message
    assert "\x1b" not in message
    assert "\\n" in message
