"""The online-or-offline decision with a stand-in API client: stalls, "no" answers, erasure."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cofferd.errors import NotFound, OfflineRefused, Unauthorized, UpstreamUnavailable
from cofferd.field.clock import TrustedClock
from cofferd.field.lease import key_id
from cofferd.field.offline import Field
from cofferd.field.records import RecordStore
from cofferd.resources.cache import BigPartCache
from cofferd.resources.index import Index
from cofferd.resources.managed import ManagedCache
from cofferd.resources.wire import ResourceInfo

SIGNER = Ed25519PrivateKey.generate()
PUBLIC = SIGNER.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
BIG = b"b" * 1000


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def resource(version: int = 1) -> ResourceInfo:
    key, small = secrets.token_bytes(32), secrets.token_bytes(40)
    now = int(time.time())
    payload = json.dumps(
        {
            "v": 1,
            "sub": "r@x",
            "folder": "models",
            "name": "m.bin",
            "version": version,
            "key_sha256": hashlib.sha256(key).hexdigest(),
            "small_sha256": hashlib.sha256(small).hexdigest(),
            "big_sha256": hashlib.sha256(BIG).hexdigest(),
            "big_size": len(BIG),
            "plaintext_size": 1,
            "iat": now,
            "exp": now + 3600,
        }
    ).encode()
    lease = {
        "payload": b64url(payload),
        "signature": b64url(SIGNER.sign(payload)),
        "key_id": key_id(PUBLIC),
    }
    return ResourceInfo(
        "models",
        "m.bin",
        version,
        small,
        key,
        "http://cdn/x",
        len(BIG),
        hashlib.sha256(BIG).hexdigest(),
        1,
        lease,
    )


class FakeClient:
    """``get_resource`` does what ``behaviour`` says; ``authenticated`` is settable."""

    def __init__(self) -> None:
        self.behaviour: Any = None
        self.authenticated = True
        #: The identity in use: the leases' ``sub``.
        self.subject: str | None = "r@x"

    def get_resource(self, folder: str, name: str, version: int | None = None) -> ResourceInfo:
        b = self.behaviour
        if isinstance(b, BaseException):
            raise b
        if callable(b):
            result: ResourceInfo = b()
            return result
        assert isinstance(b, ResourceInfo)
        return b


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Field, FakeClient, BigPartCache]:
    client = FakeClient()
    cache = BigPartCache(tmp_path / "cache")
    field = Field(
        lambda: client,  # type: ignore[arg-type,return-value]
        RecordStore(None, None),
        TrustedClock(None),
        lease_public_keys=[base64.b64encode(PUBLIC).decode()],
        decide_within=0.5,
    )
    return field, client, cache


def cache_it(cache: BigPartCache, info: ResourceInfo) -> None:
    path = cache.path_for(info)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(BIG)


def test_a_stalled_upstream_is_decided_within_the_bound(
    setup: tuple[Field, FakeClient, BigPartCache],
) -> None:
    field, client, cache = setup
    info = resource()
    client.behaviour = info
    assert field.resolve("models", "m.bin") == (info, False)
    cache_it(cache, info)
    release = threading.Event()
    client.behaviour = lambda: (release.wait(10), info)[1]
    began = time.monotonic()
    served, offline = field.resolve("models", "m.bin")
    assert offline
    assert time.monotonic() - began < 2
    assert (served.key, served.version) == (info.key, 1)
    release.set()


def test_a_refused_connection_decides_at_once(
    setup: tuple[Field, FakeClient, BigPartCache],
) -> None:
    field, client, cache = setup
    info = resource()
    client.behaviour = info
    field.resolve("models", "m.bin")
    cache_it(cache, info)

    def refused() -> ResourceInfo:
        field.failed(ConnectionRefusedError())  # what the client's observer hook reports
        time.sleep(5)  # its retries would go on
        raise UpstreamUnavailable("cannot connect")

    client.behaviour = refused
    began = time.monotonic()
    assert field.resolve("models", "m.bin")[1] is True
    assert time.monotonic() - began < 0.4
    assert field.status()["mode"] == "offline"


@pytest.mark.parametrize("no", [Unauthorized("refused"), NotFound("gone")])
def test_an_upstream_no_erases_the_record(
    setup: tuple[Field, FakeClient, BigPartCache], no: Exception
) -> None:
    field, client, cache = setup
    info = resource()
    client.behaviour = info
    field.resolve("models", "m.bin")
    cache_it(cache, info)
    assert field.status()["records"]
    client.behaviour = no
    with pytest.raises(type(no)):
        field.resolve("models", "m.bin")
    assert field.status()["records"] == []
    client.behaviour = UpstreamUnavailable("down")
    with pytest.raises(OfflineRefused, match="no record"):
        field.resolve("models", "m.bin")


def test_not_logged_in_keeps_the_record(setup: tuple[Field, FakeClient, BigPartCache]) -> None:
    field, client, _ = setup
    client.behaviour = resource()
    field.resolve("models", "m.bin")
    client.authenticated = False
    client.behaviour = Unauthorized("log in first")
    with pytest.raises(Unauthorized):
        field.resolve("models", "m.bin")
    assert field.status()["records"]


def test_not_cached_is_refused_by_the_read_not_the_decision(
    setup: tuple[Field, FakeClient, BigPartCache], tmp_path: Path
) -> None:
    field, client, cache = setup
    client.behaviour = resource()
    field.resolve("models", "m.bin")
    client.behaviour = UpstreamUnavailable("down")
    info, offline = field.resolve("models", "m.bin")
    assert offline
    managed = ManagedCache(cache, Index(tmp_path / "index.sqlite3"), NoCdn())
    with (
        pytest.raises(OfflineRefused, match="it is not cached"),
        managed.reading(info, cached_only=True),
    ):
        pass


class NoCdn:
    """A CDN source an offline load must never touch."""

    def iter_big(self, url: str, size: int, offset: int = 0) -> Iterator[bytes]:
        raise AssertionError("an offline load went to the CDN")
