"""The TUF repository over HTTP, as devices and publishers see it (docs/trust.md):
an independent python-tuf Updater against the real server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from tuf.api.exceptions import RepositoryError, UnsignedMetadataError
from tuf.api.metadata import Metadata, Timestamp
from tuf.ngclient import Updater

from fixtures import trust as tuf_fixtures
from fixtures.upstream import Upstream

TARGET = "resources/models/x"


def updater(upstream: Upstream, tmp_path: Path, root: bytes | None = None) -> Updater:
    """A device's view: a fresh metadata dir, bootstrapped from the root it pins."""
    assert upstream.trust is not None
    metadata_dir = tmp_path / f"tuf-{len(list(tmp_path.iterdir()))}"
    metadata_dir.mkdir()
    return Updater(
        str(metadata_dir),
        upstream.tuf_url,
        bootstrap=root if root is not None else upstream.trust.root,
    )


def release(version: int, name: str = "x") -> tuf_fixtures.ResourceTarget:
    return tuf_fixtures.resource_target(
        "models",
        name,
        version,
        small=bytes(40),
        key=bytes(32),
        big=b"big part",
        plaintext_size=8,
    )


def signed_role(version: int, *targets: tuf_fixtures.ResourceTarget, signer=None) -> bytes:  # type: ignore[no-untyped-def]
    keys = tuf_fixtures.session_keys()
    metadata = tuf_fixtures.role_metadata(version, {t.path: t.target for t in targets})
    return tuf_fixtures.sign(metadata, signer or keys.publisher1)


def timestamp_version(upstream: Upstream) -> int:
    answer = upstream.tuf_get("timestamp.json")
    assert answer.status_code == 200
    return Metadata[Timestamp].from_bytes(answer.content).signed.version


def test_an_updater_finds_a_release_after_a_signed_put(
    trusted_upstream: Upstream, tmp_path: Path
) -> None:
    before = updater(trusted_upstream, tmp_path)
    before.refresh()
    # Delegated, but no publisher signed anything yet: not in the snapshot.
    with pytest.raises(RepositoryError, match="not part of snapshot"):
        before.get_targetinfo(TARGET)

    answer = trusted_upstream.put_role(signed_role(1, release(1)))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"role": "publishers", "version": 1}

    device = updater(trusted_upstream, tmp_path)
    device.refresh()
    found = device.get_targetinfo(TARGET)
    assert found is not None
    assert found.unrecognized_fields["custom"]["coffer"]["version"] == 1
    assert found.hashes == release(1).target.hashes


def test_the_same_version_twice_is_409(trusted_upstream: Upstream) -> None:
    assert trusted_upstream.put_role(signed_role(1, release(1))).status_code == 200
    again = trusted_upstream.put_role(signed_role(1, release(2)))
    assert again.status_code == 409
    assert "the current is 1" in again.json()["detail"]
    skipped = trusted_upstream.put_role(signed_role(3, release(3)))
    assert skipped.status_code == 409


def test_a_key_not_delegated_is_403_and_nothing_changes(
    trusted_upstream: Upstream, tmp_path: Path
) -> None:
    keys = tuf_fixtures.session_keys()
    assert trusted_upstream.put_role(signed_role(1, release(1))).status_code == 200
    stamp = timestamp_version(trusted_upstream)
    # The targets key is the owner's, not one the delegation names.
    forged = trusted_upstream.put_role(signed_role(2, release(2), signer=keys.targets))
    assert forged.status_code == 403
    assert forged.json()["detail"] == "not signed by a threshold of the role's keys"
    assert timestamp_version(trusted_upstream) == stamp
    assert trusted_upstream.tuf_get("2.publishers.json").status_code == 404
    device = updater(trusted_upstream, tmp_path)
    device.refresh()
    found = device.get_targetinfo(TARGET)
    assert found is not None
    assert found.unrecognized_fields["custom"]["coffer"]["version"] == 1


def test_a_path_outside_the_delegation_is_400(trusted_upstream: Upstream) -> None:
    outside = tuf_fixtures.role_metadata(1, {"elsewhere/x": release(1).target})
    keys = tuf_fixtures.session_keys()
    answer = trusted_upstream.put_role(tuf_fixtures.sign(outside, keys.publisher1))
    assert answer.status_code == 400
    assert "'elsewhere/x'" in answer.json()["detail"]
    assert trusted_upstream.tuf_get("1.publishers.json").status_code == 404


def test_put_refusals_in_order(trusted_upstream: Upstream) -> None:
    reader = trusted_upstream.put_role(signed_role(1, release(1)), account=trusted_upstream.reader)
    assert reader.status_code == 403
    unauthenticated = requests.put(
        f"{trusted_upstream.url}/v1/tuf/roles/publishers", data=b"{}", timeout=30
    )
    assert unauthenticated.status_code == 401
    assert trusted_upstream.put_role(b"not json").status_code == 400
    bad_name = trusted_upstream.put_role(signed_role(1, release(1)), role="Publishers")
    assert bad_name.status_code == 400
    undelegated = trusted_upstream.put_role(signed_role(1, release(1)), role="others")
    assert undelegated.status_code == 400
    assert "not delegated" in undelegated.json()["detail"]
    top_level = trusted_upstream.put_role(signed_role(1, release(1)), role="targets")
    assert top_level.status_code == 400
    expired = tuf_fixtures.role_metadata(
        1,
        {release(1).path: release(1).target},
        expires=tuf_fixtures.expiry(-tuf_fixtures.timedelta(days=1)),
    )
    keys = tuf_fixtures.session_keys()
    answer = trusted_upstream.put_role(tuf_fixtures.sign(expired, keys.publisher1))
    assert answer.status_code == 400
    assert "expired" in answer.json()["detail"]
    too_big = trusted_upstream.put_role(b" " * (4 * 1024 * 1024 + 1))
    assert too_big.status_code == 413


def test_files_are_served_as_stored(trusted_upstream: Upstream) -> None:
    assert trusted_upstream.trust is not None
    root = trusted_upstream.tuf_get("1.root.json")
    assert root.status_code == 200
    assert root.content == trusted_upstream.trust.root
    assert root.headers["content-type"] == "application/json"
    timestamp = trusted_upstream.tuf_get("timestamp.json")
    assert timestamp.headers["cache-control"] == "no-store"
    for missing in (
        "2.root.json",
        "1.timestamp.json",
        "0.targets.json",
        "01.targets.json",
        "x.json",
        "1.Publishers.json",
        "1.publishers.json",
    ):
        assert trusted_upstream.tuf_get(missing).status_code == 404, missing


def test_no_trust_installed_is_404(upstream: Upstream) -> None:
    for name in ("1.root.json", "timestamp.json", "1.snapshot.json", "1.targets.json"):
        assert upstream.tuf_get(name).status_code == 404


def test_a_dropped_publisher_key_is_refused_by_the_updater(
    trusted_upstream: Upstream, tmp_path: Path
) -> None:
    keys = tuf_fixtures.session_keys()
    assert trusted_upstream.put_role(signed_role(1, release(1))).status_code == 200
    path = tmp_path / "targets.json"
    path.write_bytes(
        tuf_fixtures.sign(
            tuf_fixtures.targets_metadata(version=2, publishers=[keys.publisher2]), keys.targets
        )
    )
    done = trusted_upstream.admin("trust", "targets", str(path))
    assert done.returncode == 0, done.stderr
    device = updater(trusted_upstream, tmp_path)
    device.refresh()
    with pytest.raises(UnsignedMetadataError):
        device.get_targetinfo(TARGET)


def test_root_rotation_is_followed(trusted_upstream: Upstream, tmp_path: Path) -> None:
    assert trusted_upstream.trust is not None
    keys = tuf_fixtures.session_keys()
    pinned = updater(trusted_upstream, tmp_path)
    pinned.refresh()
    new_root = tuf_fixtures.root_metadata(
        trusted_upstream.trust.online, version=2, root_keys=[keys.root2]
    )
    path = tmp_path / "2.root.json"
    # Only the new key: the current root's threshold is missing.
    path.write_bytes(tuf_fixtures.sign(new_root, keys.root2))
    refused = trusted_upstream.admin("trust", "root", str(path))
    assert refused.returncode == 2
    assert "threshold of the current keys" in refused.stderr
    assert trusted_upstream.tuf_get("2.root.json").status_code == 404

    path.write_bytes(tuf_fixtures.sign(new_root, keys.root1, keys.root2))
    done = trusted_upstream.admin("trust", "root", str(path))
    assert done.returncode == 0, done.stderr
    assert trusted_upstream.put_role(signed_role(1, release(1))).status_code == 200
    device = updater(trusted_upstream, tmp_path)  # pinned root 1
    device.refresh()
    assert device.get_targetinfo(TARGET) is not None
    assert Metadata.from_file(str(Path(device._dir) / "root.json")).signed.version == 2


def test_an_expired_timestamp_is_renewed_by_the_janitor(
    upstream_factory: Callable[..., Upstream], tmp_path: Path
) -> None:
    server = upstream_factory(trust=True, extra_args=["--timestamp-expiry", "2"])
    # Signed now with the server's 2 s lifetime.
    assert server.put_role(signed_role(1, release(1))).status_code == 200
    first = Metadata[Timestamp].from_bytes(server.tuf_get("timestamp.json").content).signed
    assert first.expires.timestamp() - time.time() <= 2
    # Until the first has expired, and the janitor (every 0.5 s, a quarter of
    # the shortest lifetime) has renewed it.
    deadline = time.monotonic() + 20
    while first.is_expired() is False or timestamp_version(server) == first.version:
        assert time.monotonic() < deadline, "the timestamp was not renewed"
        time.sleep(0.1)
    device = updater(server, tmp_path)
    device.refresh()  # python-tuf refuses an expired timestamp (ExpiredMetadataError)
    assert device.get_targetinfo(TARGET) is not None
    # The snapshot was not due: the same one, under a newer timestamp.
    renewed = Metadata[Timestamp].from_bytes(server.tuf_get("timestamp.json").content).signed
    assert renewed.snapshot_meta.version == first.snapshot_meta.version
    assert renewed.version > first.version


def test_publish_signs_the_release(trusted_upstream: Upstream, tmp_path: Path) -> None:
    big = b"x" * (tuf_fixtures.SEGMENT_SIZE + 1)
    key = bytes(range(32))
    one = trusted_upstream.publish("models", "x", big, key=key, plaintext_size=5)
    two = trusted_upstream.publish("models", "y", b"y", sign=False)
    device = updater(trusted_upstream, tmp_path)
    device.refresh()
    found = device.get_targetinfo(TARGET)
    assert found is not None
    expected = tuf_fixtures.resource_target(
        "models", "x", one, small=bytes(40), key=key, big=big, plaintext_size=5
    )
    assert found.to_dict() == expected.target.to_dict()
    assert device.get_targetinfo("resources/models/y") is None
    headers = trusted_upstream.auth(trusted_upstream.reader)
    base = f"{trusted_upstream.url}/v1/resources/models"
    manifest = requests.get(f"{base}/x/versions/{one}/segments", headers=headers, timeout=30)
    assert len(manifest.content) == 64
    assert (
        requests.get(f"{base}/y/versions/{two}/segments", headers=headers, timeout=30).status_code
        == 404
    )


@pytest.mark.databases("postgresql")
def test_two_replicas_putting_one_version_give_it_once(trusted_upstream: Upstream) -> None:
    one = trusted_upstream
    other = Upstream(
        one.data_dir, one.reader, one.publisher, database_url=one.database_url, trust=one.trust
    ).start()
    try:
        tokens = [replica.auth(replica.publisher) for replica in (one, other)]

        def put(replica: Upstream, headers: dict[str, str], body: bytes) -> int:
            barrier.wait(timeout=30)
            url = f"{replica.url}/v1/tuf/roles/publishers"
            return requests.put(url, data=body, headers=headers, timeout=30).status_code

        for version in (1, 2, 3):
            bodies = [signed_role(version, release(version)), signed_role(version, release(9))]
            barrier = threading.Barrier(2)
            with ThreadPoolExecutor(2) as pool:
                statuses = list(pool.map(put, (one, other), tokens, bodies))
            assert sorted(statuses) == [200, 409], version
        # Each change signed one snapshot: numbers taken once each, none skipped.
        snapshot = Metadata[Timestamp].from_bytes(one.tuf_get("timestamp.json").content)
        assert one.tuf_get(f"{snapshot.signed.snapshot_meta.version}.snapshot.json").ok
    finally:
        other.stop()
        assert other.problems() == []
