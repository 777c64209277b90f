"""Fixtures of the real services the tests run against, one module each."""

pytest_plugins = [
    "fixtures.upstream",  # the reference upstream on loopback
    "fixtures.daemon",  # cofferd as a real process on a temp socket
    "fixtures.dockerd",  # a private dockerd
    "fixtures.systemd",  # a Debian 12 root with systemd as PID 1, in the private dockerd
]
