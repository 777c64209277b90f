"""Fixtures of the real services the tests run against, one module each."""

from __future__ import annotations

import pytest

pytest_plugins = [
    # Before the fixtures that start servers: forks them from a warm interpreter.
    "fixtures.zygote",
    "fixtures.postgres",  # a real PostgreSQL server in a temp dir
    "fixtures.trust",  # TUF keys and metadata made with python-tuf
    "fixtures.upstream",  # the reference upstream on loopback
    "fixtures.nginx",  # nginx as a reverse proxy in front of upstream replicas
    "fixtures.s3",  # a real S3 server (Ceph radosgw), once per session
    # Before fixtures.daemon, which imports it: every response from cofferd
    # checked against rpc.discover's document.
    "fixtures.openrpc",
    "fixtures.daemon",  # cofferd as a real process on a temp socket
    "fixtures.dockerd",  # a private dockerd
    "fixtures.systemd",  # a Debian 12 root with systemd as PID 1, in the private dockerd
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The private dockerd (and the systemd container inside it) runs as root,
    # so every test that uses it needs root: marked here, once, rather than in
    # each file, so that a new docker test cannot forget it.
    for item in items:
        if item.get_closest_marker("docker") or "dockerd" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.root)
