"""``Client.load_memfd`` against a real cofferd: the caller's memfd, filled, sealed, checked."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator

import pytest

from coffer import client as cc
from coffer.errors import ProtocolError
from coffer.memfd import REQUIRED_SEALS, Memfd, check_sealed
from fixtures.daemon import CofferdProcess
from fixtures.upstream import Upstream

Daemon = Callable[..., CofferdProcess]
SEGMENT = 1024 * 1024


@pytest.fixture
def daemon(cofferd: Daemon) -> CofferdProcess:
    return cofferd(env={"COFFER_MEMFD_MAX_BYTES": str(3 * SEGMENT)})


@pytest.fixture
def c(daemon: CofferdProcess, upstream: Upstream) -> Iterator[cc.Client]:
    with cc.Client(daemon.socket_path, timeout=60) as client:
        client.login(upstream.publisher.email, upstream.publisher.password)
        yield client


def test_load_memfd_is_sealed_readable_and_mappable(c: cc.Client, daemon: CofferdProcess) -> None:
    data = os.urandom(2 * SEGMENT + 17)  # crosses segment boundaries
    up = c.upload_bytes("model.bin", "models", data)
    daemon.sign(up)
    version = up["version"]
    with c.load_memfd("model.bin") as memfd:
        assert memfd.size == len(data)
        assert fcntl.fcntl(memfd.fd, fcntl.F_GET_SEALS) & REQUIRED_SEALS == REQUIRED_SEALS
        assert not os.get_inheritable(memfd.fd)  # a child gets it only when asked
        with memfd.file() as f:
            assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
            f.seek(SEGMENT - 3)
            assert f.read(10) == data[SEGMENT - 3 : SEGMENT + 7]
        with memfd.mmap() as m:
            assert m[:] == data
        with open(memfd.path, "rb") as f:
            assert f.read() == data
        # Sealed: nobody, not even the holder, can change a byte or the size.
        with pytest.raises(PermissionError):
            os.pwrite(memfd.fd, b"x", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(memfd.fd, 1)
    assert version == 1


def test_a_second_call_on_the_same_connection_works_and_gets_a_new_fd(
    c: cc.Client, daemon: CofferdProcess
) -> None:
    daemon.sign(c.upload_bytes("a", "models", b"first"))
    with c.load_memfd("a") as one, c.load_memfd("a") as two:
        assert one.fd != two.fd
        with one.file() as f1, two.file() as f2:
            assert f1.read() == f2.read() == b"first"
    assert c.health()["status"] == "ok"


def test_empty_resource_gives_an_empty_sealed_memfd(c: cc.Client, daemon: CofferdProcess) -> None:
    daemon.sign(c.upload_bytes("empty", "models", b""))
    with c.load_memfd("empty") as memfd:
        assert memfd.size == 0
        with memfd.file() as f:
            assert f.read() == b""
        with pytest.raises(ValueError, match="empty memfd"):
            memfd.mmap()


def test_over_memfd_max_bytes_is_too_large_and_no_fd_comes(
    c: cc.Client, daemon: CofferdProcess
) -> None:
    daemon.sign(c.upload_bytes("big", "models", bytes(3 * SEGMENT + 1)))
    before = _open_fds()
    with pytest.raises(cc.TooLarge) as info:
        c.load_memfd("big")
    assert "memfd_max_bytes" in info.value.detail
    assert _open_fds() == before
    assert c.health()["status"] == "ok"


def test_errors_come_without_an_fd(c: cc.Client) -> None:
    before = _open_fds()
    with pytest.raises(cc.NotFound):
        c.load_memfd("missing")
    with pytest.raises(cc.BadRequest):
        c.load_memfd("../etc/passwd")
    assert _open_fds() == before


def test_the_memfd_is_the_callers_own_allocated_before_cofferd_fills_it(
    c: cc.Client, daemon: CofferdProcess
) -> None:
    daemon.sign(c.upload_bytes("x", "models", bytes(SEGMENT)))
    assert c.stat("x")["size"] == SEGMENT
    memfd = Memfd.create("mine", SEGMENT)
    with memfd:
        assert os.fstat(memfd.fd).st_blocks * 512 >= SEGMENT  # our pages, before the call
        result = c.call("load_memfd", {"filename": "x"}, [memfd.fd])
        assert result["size"] == SEGMENT
        memfd.check_sealed()
        assert os.pread(memfd.fd, 8, 0) == bytes(8)


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda: None, "needs a memfd"),
        (lambda: Memfd.create("small", 3).fd, "holds 3 bytes"),
        (lambda: _unallocated(4), "not fully allocated"),
        (lambda: _unsealable(4), "cannot be sealed"),
        (lambda: os.pipe()[1], "not a memfd"),
    ],
)
def test_a_wrong_memfd_is_refused_and_nothing_comes_back(
    c: cc.Client, daemon: CofferdProcess, make, detail: str
) -> None:
    daemon.sign(c.upload_bytes("x", "models", b"data"))
    fd = make()
    fds = [] if fd is None else [fd]
    before = _open_fds()
    with pytest.raises(cc.BadRequest) as info:
        c.call("load_memfd", {"filename": "x"}, fds)
    assert detail in info.value.detail
    assert _open_fds() == before
    if fd is not None:
        os.close(fd)


def _unsealable(size: int) -> int:
    """Sized and allocated, but made without MFD_ALLOW_SEALING."""
    fd = os.memfd_create("unsealable", 0)
    os.ftruncate(fd, size)
    os.posix_fallocate(fd, 0, size)
    return fd


def _unallocated(size: int) -> int:
    fd = os.memfd_create("holes", os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    return fd


def test_unsealed_or_wrong_fds_are_refused() -> None:
    fd = os.memfd_create("fake", os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, b"abc")
        with pytest.raises(ProtocolError, match="lacks seals"):
            Memfd(fd, 3).check_sealed()
        # All but one seal is still not enough.
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, REQUIRED_SEALS & ~fcntl.F_SEAL_WRITE)
        with pytest.raises(ProtocolError, match="lacks seals"):
            check_sealed(fd, 3)
    finally:
        os.close(fd)
    fd = os.memfd_create("sealed", os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, b"abc")
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, REQUIRED_SEALS)
        check_sealed(fd, 3)
        with pytest.raises(ProtocolError, match="not the 4 announced"):
            check_sealed(fd, 4)
    finally:
        os.close(fd)
    r, w = os.pipe()
    try:
        with pytest.raises(ProtocolError, match="not a sealed memfd"):
            check_sealed(r, 0)
    finally:
        os.close(r)
        os.close(w)


def _open_fds() -> list[str]:
    """The memfds this process holds (the socket may come and go with errors)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own fd, closed by now
            continue
        if target.startswith("/memfd:"):
            found.append(target)
    return found
