"""``list``, ``load``, ``load_memfd``, ``stat``, ``pull`` and ``upload`` against fake services.

The load owner (``app.loads``) is a fake that delivers a known plaintext into
whatever sink the method hands it, and the upload service is replaced the
same way: what is tested is the method's own part (params, the fd or inline
choice, the sink, the answer). The real load path runs in
tests/cofferd/field/ and tests/cofferd/resources/ and, through the daemon, in
tests/cofferd/rpc/test_methods.py.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import os
from typing import Any

import pytest

from cofferd.errors import BadName, BadRequest, InvalidParams, TooLarge
from cofferd.models import UploadResult
from cofferd.resources.listing import Listed
from cofferd.rpc.methods import resources
from cofferd.trust.release import ResourceRelease

#: What the fake load owner delivers (``FakeLoads.plaintext`` in conftest.py).
DATA = b"plaintext of a model"
#: The release the fake upload answers with (its shape: docs/trust.md).
TARGET = {
    "path": "resources/models/m.bin",
    **ResourceRelease(
        "models", "m.bin", 5, 40, "a" * 64, "b" * 64, 0, "c" * 64, 0, 1 << 20, "d" * 64
    ).to_target(),
}


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Any]]:
    seen: dict[str, list[Any]] = {"upload": []}

    def upload(client: Any, folder: str, name: str, src: Any) -> UploadResult:
        data = src.read()
        seen["upload"].append((folder, name, data))
        return UploadResult(folder, name, 5, len(data), TARGET)

    monkeypatch.setattr(resources.service, "upload", upload)
    return seen


def test_list_marks_what_is_cached_across_pages(app, invoke) -> None:
    app.client.pages["models"] = [
        [Listed("a.bin", 1, 10, 20, 1.0)],
        [Listed("b.bin", 2, 30, 40, None)],
    ]
    app.add_entry("a.bin")
    got = invoke("list")
    assert got["folder"] == "models"
    assert [(i["filename"], i["version"], i["cached"]) for i in got["items"]] == [
        ("a.bin", 1, True),
        ("b.bin", 2, False),
    ]
    with pytest.raises(BadName):
        invoke("list", folder="../x")


def test_load_without_an_fd_answers_inline(app, invoke) -> None:
    got = invoke("load", filename="m.bin")
    assert base64.b64decode(got["data"]) == DATA
    assert (got["folder"], got["filename"], got["version"], got["size"]) == (
        "models",
        "m.bin",
        3,
        len(DATA),
    )
    assert got["from_cache"] is True
    assert app.loads.loads == [("models", "m.bin")]


def test_load_inline_over_the_cap_is_refused_before_any_byte(app, invoke) -> None:
    app.settings = dataclasses.replace(app.settings, inline_max_bytes=len(DATA) - 1)
    with pytest.raises(TooLarge, match="inline cap"):
        invoke("load", filename="m.bin")


def test_load_with_an_fd_writes_it_closes_it_and_answers_without_data(invoke) -> None:
    r, w = os.pipe()
    try:
        got = invoke("load", filename="m.bin", folder="other", fds=[w])
        assert "data" not in got
        assert got["folder"] == "other"
        assert os.read(r, 1000) == DATA
        assert os.read(r, 1000) == b""  # closed before the answer
    finally:
        os.close(r)


@pytest.mark.parametrize("params", [{"filename": "../x"}, {"filename": "a", "folder": ""}])
def test_a_bad_name_is_refused_before_the_load(app, invoke, params) -> None:
    for method in ("load", "load_memfd", "stat", "pull"):
        with pytest.raises(BadName):
            invoke(method, **params)
    assert app.loads.loads == []
    assert app.loads.pulls == []


def test_stat_answers_what_a_load_would_deliver(invoke) -> None:
    got = invoke("stat", filename="m.bin")
    assert (got["version"], got["size"]) == (3, len(DATA))


def _callers_memfd(size: int) -> int:
    fd = os.memfd_create("test", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    os.posix_fallocate(fd, 0, size)
    return fd


def test_load_memfd_fills_and_seals_the_callers_memfd(invoke) -> None:
    fd = _callers_memfd(len(DATA))
    mine = os.dup(fd)
    try:
        got = invoke("load_memfd", filename="m.bin", fds=[fd])
        assert got["size"] == len(DATA)
        assert os.pread(mine, 1000, 0) == DATA
        seals = fcntl.fcntl(mine, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE
        assert seals & fcntl.F_SEAL_SEAL
    finally:
        os.close(mine)


def test_load_memfd_without_a_memfd_is_refused(app, invoke) -> None:
    with pytest.raises(BadRequest, match="memfd"):
        invoke("load_memfd", filename="m.bin")
    assert app.loads.loads == []


def test_load_memfd_of_the_wrong_size_is_refused_and_left_unsealed(invoke) -> None:
    fd = _callers_memfd(len(DATA) + 1)
    mine = os.dup(fd)
    try:
        with pytest.raises(BadRequest):
            invoke("load_memfd", filename="m.bin", fds=[fd])
        assert not fcntl.fcntl(mine, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE
    finally:
        os.close(mine)


def test_pull_pins_when_asked_and_says_so(app, invoke) -> None:
    got = invoke("pull", filename="m.bin")
    assert (got["version"], got["size"], got["from_cache"], got["pinned"]) == (2, 99, False, False)
    assert invoke("pull", filename="m.bin", pin=True)["pinned"] is True
    assert app.index.is_pinned("models", "m.bin")
    with pytest.raises(InvalidParams):
        invoke("pull", filename="m.bin", pin="yes")


def test_upload_inline_and_through_an_fd(invoke, service) -> None:
    data = base64.b64encode(b"abc").decode()
    got = invoke("upload", filename="u.bin", data=data, size=3)
    assert got == {
        "status": "ok",
        "folder": "models",
        "filename": "u.bin",
        "version": 5,
        "size": 3,
        "target": TARGET,
    }
    r, w = os.pipe()
    os.write(w, b"through a pipe")
    os.close(w)
    assert invoke("upload", filename="p.bin", fds=[r])["size"] == len(b"through a pipe")
    assert [u[2] for u in service["upload"]] == [b"abc", b"through a pipe"]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, BadRequest),  # neither an fd nor data
        ({"data": "not base64!"}, InvalidParams),
        ({"data": 12}, InvalidParams),
        ({"data": base64.b64encode(b"abc").decode(), "size": 4}, BadRequest),
        ({"size": -1, "data": ""}, InvalidParams),
        ({"data": "A" * 8_000_004}, TooLarge),  # over the inline cap, refused undecoded
    ],
)
def test_bad_uploads_publish_nothing(invoke, service, params, error) -> None:
    with pytest.raises(error):
        invoke("upload", filename="u.bin", **params)
    assert service["upload"] == []


def test_an_fd_and_data_together_are_refused_and_the_fd_closed(invoke, service) -> None:
    r, w = os.pipe()
    try:
        with pytest.raises(BadRequest, match="not both"):
            invoke("upload", filename="u.bin", data="", fds=[r])
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(r)
    finally:
        os.close(w)
    assert service["upload"] == []
