"""The client library works in a caller that has more than 1024 files open."""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Iterator

import pytest

from coffer.client import Client
from fixtures.daemon import CofferdProcess


@pytest.fixture
def many_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1300:
        pytest.skip(f"the hard RLIMIT_NOFILE ({hard}) leaves no room for 1200 fds")
    want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
    held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]
    try:
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_calls_on_a_socket_numbered_above_1024(
    cofferd: Callable[..., CofferdProcess], many_fds: None
) -> None:
    daemon = cofferd()
    with Client(daemon.socket_path, timeout=10) as client:
        assert client.health()["status"] == "ok"
        assert client._sock is not None
        assert client._sock.fileno() >= 1024
        # The second call checks the kept connection: the path select() broke on.
        assert client.health()["status"] == "ok"
