import os
import socket

from cofferd.rpc.dispatch.context import PeerCred


def test_peer_credentials_carry_the_supplementary_groups() -> None:
    # A caller is often in the socket's group only as a supplementary group:
    # losing those would lock every such caller out.
    saved = os.getgroups()
    os.setgroups([*saved, 12345, 23456])
    try:
        server, client = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    finally:
        os.setgroups(saved)
    with server, client:
        peer = PeerCred.of(server)
    assert peer.pid == os.getpid()
    assert peer.uid == os.getuid()
    assert {12345, 23456} <= peer.groups
