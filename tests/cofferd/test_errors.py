"""The one error tree and its wire table, over every error class cofferd defines anywhere."""

from __future__ import annotations

import importlib
import pkgutil
import random

import cofferd
from coffer.protocol import ErrorCode
from cofferd import errors


def every_module() -> list[str]:
    """Every module of cofferd, imported, so that every error class it defines exists."""
    names = [
        info.name
        for info in pkgutil.walk_packages(cofferd.__path__, "cofferd.")
        if not info.name.endswith("__main__")
    ]
    for name in names:
        importlib.import_module(name)
    return names


def subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


MODULES = every_module()
CLASSES = subclasses(errors.CofferError)
WIRE_CLASSES = {c for c in CLASSES if not issubclass(c, errors.LocalError)}
LOCAL_CLASSES = CLASSES - WIRE_CLASSES - {errors.LocalError}


def test_the_walk_sees_errors_defined_outside_errors_py() -> None:
    assert "cofferd.rpc.methods.resources" in MODULES
    outside = {c.__module__ for c in CLASSES} - {"cofferd.errors"}
    assert {"cofferd.field.lease", "cofferd.field.sealing"} <= outside


def test_every_wire_error_has_a_row_and_no_local_one_does() -> None:
    # A wire error without a row would reach the caller as an internal error.
    missing = sorted(
        f"{c.__module__}.{c.__qualname__}" for c in WIRE_CLASSES if errors.wire_code(c("x")) is None
    )
    assert missing == []
    for cls in LOCAL_CLASSES:
        assert errors.wire_code(cls("x")) is None, cls
    assert not set(errors.WIRE) & LOCAL_CLASSES


def test_every_code_a_caller_can_get_has_a_class_and_one_short_message() -> None:
    rows = {code for code, _ in errors.WIRE.values()}
    assert rows == set(ErrorCode)
    assert errors.message_for(ErrorCode.BAD_REQUEST) == "Bad request"
    assert errors.message_for(ErrorCode.UPSTREAM_BAD_DATA) == "Upstream bad data"
    assert errors.message_for(ErrorCode.BUSY) == "Busy"
    assert errors.message_for(12345) == "Internal error"


def test_offline_errors_of_the_field_are_offline_refusals() -> None:
    from cofferd.field.lease import LeaseInvalid
    from cofferd.field.sealing import RecordUnreadable

    for cls in (LeaseInvalid, RecordUnreadable):
        assert errors.wire_code(cls("x")) == (ErrorCode.OFFLINE_REFUSED, "Offline use refused")


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


def test_settings_error_is_not_a_bad_request() -> None:
    assert not issubclass(errors.SettingsError, errors.BadRequest)
