"""A device against the reference upstream with its TUF repository ready.

The publisher signs with python-tuf (``fixtures.upstream``'s ``publish``),
the device pins the upstream's root 1 and loads: the signed release is
delivered, a version the publisher's account stored without the key is
not, and an independent ``tuf.ngclient.Updater`` finds every target the
device loads. The publisher's two calls (``trust.metadata``,
``trust.publish``) go through cofferd, the private key staying here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Targets
from tuf.ngclient import Updater

from coffer.client import Client, Conflict, Untrusted
from fixtures import trust as tuf_fixtures
from fixtures.daemon import CofferdProcess, load_via_pipe
from fixtures.tuf_hostile import encrypt
from fixtures.upstream import Upstream

FOLDER, NAME = "models", "ref.onnx"
V1 = b"signed by the publisher " * 5000
V2 = b"stored by an account without the key " * 5000


def publish(up: Upstream, plaintext: bytes, *, sign: bool, version: int) -> int:
    stored = encrypt(FOLDER, NAME, plaintext, version)
    return up.publish(
        FOLDER,
        NAME,
        stored.big,
        small=stored.small,
        key=stored.key,
        plaintext_size=len(plaintext),
        sign=sign,
    )


@pytest.fixture
def device(
    cofferd: Callable[..., CofferdProcess], trusted_upstream: Upstream
) -> Callable[..., CofferdProcess]:
    def start(account: str = "reader") -> CofferdProcess:
        assert trusted_upstream.trust is not None
        d = cofferd(
            upstream_url=trusted_upstream.url,
            trust="required",
            trust_root=trusted_upstream.trust.root,
            env={"COFFER_TRUST_REFRESH_INTERVAL": "0"},
        )
        who = getattr(trusted_upstream, account)
        assert "result" in d.call("login", {"email": who.email, "password": who.password})
        return d

    return start


def test_the_signed_release_is_delivered_and_an_unsigned_one_never(
    device: Callable[..., CofferdProcess], trusted_upstream: Upstream, tmp_path: Path
) -> None:
    assert publish(trusted_upstream, V1, sign=True, version=1) == 1
    assert publish(trusted_upstream, V2, sign=False, version=2) == 2
    d = device()
    with d.connect() as sock:
        data, response = load_via_pipe(sock, {"folder": FOLDER, "filename": NAME})
    assert response["result"]["version"] == 1, response
    assert data == V1
    # An independent TUF client finds the target the device loaded, as signed.
    assert trusted_upstream.trust is not None
    updater = Updater(
        str(tmp_path),
        trusted_upstream.tuf_url,
        bootstrap=trusted_upstream.trust.root,
    )
    updater.refresh()
    target = updater.get_targetinfo(f"resources/{FOLDER}/{NAME}")
    assert target is not None
    assert target.custom["coffer"]["version"] == 1


def test_nothing_signed_is_unsigned(
    device: Callable[..., CofferdProcess], trusted_upstream: Upstream
) -> None:
    publish(trusted_upstream, V2, sign=False, version=1)
    d = device()
    with Client(d.socket_path) as c, pytest.raises(Untrusted) as info:
        c.load_bytes(NAME, FOLDER)
    assert info.value.rule == "unsigned", info.value.detail


def test_a_publisher_signs_through_cofferd_without_handing_it_the_key(
    device: Callable[..., CofferdProcess], trusted_upstream: Upstream
) -> None:
    assert trusted_upstream.trust is not None
    publish(trusted_upstream, V1, sign=True, version=1)
    d = device("publisher")
    with Client(d.socket_path) as c:
        got = c.trust_metadata("publishers")
        targets = Metadata[Targets].from_bytes(got["targets"].encode())
        assert "publishers" in targets.signed.delegations.roles  # type: ignore[union-attr]
        role = Metadata[Targets].from_bytes(got["role"].encode())
        assert f"resources/{FOLDER}/{NAME}" in role.signed.targets
        # Sign version 2 of V2 here, hand only the signed text to cofferd.
        stored = encrypt(FOLDER, NAME, V2, 2)
        version = trusted_upstream.publish(
            FOLDER,
            NAME,
            stored.big,
            small=stored.small,
            key=stored.key,
            plaintext_size=len(V2),
            sign=False,
            segment_size=tuf_fixtures.SEGMENT_SIZE,
        )
        release = tuf_fixtures.resource_target(
            FOLDER,
            NAME,
            version,
            small=stored.small,
            key=stored.key,
            big=stored.big,
            plaintext_size=len(V2),
            segment_size=tuf_fixtures.SEGMENT_SIZE,
        )
        listed = dict(role.signed.targets)
        listed[release.path] = release.target
        signed = tuf_fixtures.sign(
            tuf_fixtures.role_metadata(role.signed.version + 1, listed),
            trusted_upstream.trust.publisher,
        )
        answer = c.trust_publish("publishers", signed.decode())
        assert answer == {"role": "publishers", "version": role.signed.version + 1}
        # The same version again: the upstream's 409.
        with pytest.raises(Conflict):
            c.trust_publish("publishers", signed.decode())
        assert c.load_bytes(NAME, FOLDER) == V2


def test_offline_the_last_verified_release_is_used_within_the_lease(
    cofferd: Callable[..., CofferdProcess], trusted_upstream: Upstream
) -> None:
    assert trusted_upstream.trust is not None
    publish(trusted_upstream, V1, sign=True, version=1)
    d = cofferd(
        upstream_url=trusted_upstream.url,
        trust="required",
        trust_root=trusted_upstream.trust.root,
        env={
            "COFFER_TRUST_REFRESH_INTERVAL": "0",
            "COFFER_LEASE_PUBLIC_KEYS": trusted_upstream.lease_key(),
            "COFFER_UPSTREAM_TIMEOUT": "5",
        },
    )
    who = trusted_upstream.reader
    d.call("login", {"email": who.email, "password": who.password})
    with Client(d.socket_path) as c:
        assert c.load_bytes(NAME, FOLDER) == V1
        trusted_upstream.stop()
        # Neither the metadata nor the resource can be fetched: the release this
        # device verified, its record and its cached big part decide.
        assert c.load_bytes(NAME, FOLDER) == V1
        assert c.trust_status()["last_refresh"]["ok"] is False
        assert c.status()["field"]["mode"] == "offline"


def test_pull_and_load_memfd_deliver_only_the_signed_release(
    device: Callable[..., CofferdProcess], trusted_upstream: Upstream
) -> None:
    publish(trusted_upstream, V1, sign=True, version=1)
    publish(trusted_upstream, V2, sign=False, version=2)
    d = device()
    with Client(d.socket_path) as c:
        assert c.stat(NAME, FOLDER)["version"] == 1
        pulled = c.call("pull", {"folder": FOLDER, "filename": NAME})
        assert (pulled["version"], pulled["from_cache"]) == (1, False)
        memfd = c.load_memfd(NAME, FOLDER)
        try:
            assert bytes(memfd.mmap()) == V1
        finally:
            memfd.close()
    cached = list((d.base / "cache" / "big" / FOLDER / NAME).iterdir())
    assert [p.name.split("-")[0] for p in cached] == ["1"]
