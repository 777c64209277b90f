"""cofferd's wrapper of the name rule: the same rule, raising cofferd's own error."""

from __future__ import annotations

import pytest

from coffer import names as client_names
from cofferd import errors
from cofferd.names import check_name, is_valid_name


def test_a_valid_name_comes_back_as_it_is() -> None:
    assert check_name("model.bin", "filename") == "model.bin"
    assert is_valid_name("model.bin")


@pytest.mark.parametrize("value", ["..", "a/b", "", None])
def test_a_bad_name_raises_cofferds_bad_name_with_the_rules_message(value: object) -> None:
    with pytest.raises(errors.BadName) as info:
        check_name(value, "folder")
    with pytest.raises(client_names.BadName) as client:
        client_names.check_name(value, "folder")
    assert str(info.value) == str(client.value)
    # One error tree in the daemon: the rpc layer maps it, not a ValueError.
    assert not isinstance(info.value, ValueError)
    assert info.value.__cause__ is None
