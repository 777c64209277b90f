"""The owner's tools, read back by an independent tuf.ngclient.Updater over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, TargetFile, Targets
from tuf.api.serialization.json import JSONSerializer

from cofferd.trust import owner
from cofferd.trust.owner import MetadataError
from fixtures.tuf_server import TufServer

PATH = "resources/models/m.onnx"


def _signers(n: int) -> list[CryptoSigner]:
    return [CryptoSigner.generate_ed25519() for _ in range(n)]


def _role(signer: CryptoSigner, version: int = 1, path: str = PATH) -> bytes:
    """A ``publishers`` role holding one target, signed by ``signer``."""
    md = Metadata(Targets(version=version, expires=datetime.now(UTC) + timedelta(days=30)))
    md.signed.targets[path] = TargetFile(40, {"sha256": "ab" * 32}, path)
    md.sign(signer)
    return md.to_bytes(JSONSerializer())


@pytest.fixture
def online() -> CryptoSigner:
    return CryptoSigner.generate_ed25519()


@pytest.fixture
def server(tmp_path: Path, online: CryptoSigner) -> Iterator[TufServer]:
    with TufServer(tmp_path / "www", online) as repo:
        yield repo


def test_new_repository_verifies_with_an_independent_updater(
    server: TufServer, online: CryptoSigner, tmp_path: Path
) -> None:
    roots, publisher = _signers(3), CryptoSigner.generate_ed25519()
    root, targets = owner.new_repository(roots, 2, online.public_key, [publisher.public_key])
    r = Metadata[Root].from_bytes(root).signed
    assert (r.version, r.consistent_snapshot) == (1, True)
    assert r.roles["root"].threshold == 2
    assert sorted(r.roles["root"].keyids) == sorted(s.public_key.keyid for s in roots)
    assert r.roles["targets"].keyids == r.roles["root"].keyids
    assert r.roles["snapshot"].keyids == r.roles["timestamp"].keyids == [online.public_key.keyid]
    assert r.roles["snapshot"].threshold == r.roles["timestamp"].threshold == 1
    assert r.expires - datetime.now(UTC) > timedelta(days=364)
    t = Metadata[Targets].from_bytes(targets).signed
    assert t.delegations is not None
    assert t.delegations.roles is not None
    role = t.delegations.roles["publishers"]
    assert (role.keyids, role.threshold, role.terminating) == (
        [publisher.public_key.keyid],
        1,
        True,
    )
    assert role.is_delegated_path(PATH)
    assert role.is_delegated_path("archives/a-1")
    assert not role.is_delegated_path("elsewhere/x")
    # python-tuf's JSON, readable as is.
    assert json.loads(root)["signed"]["_type"] == "root"

    server.put_root(root)
    server.put_role("targets", targets)
    server.put_role("publishers", _role(publisher))
    updater = server.updater(tmp_path / "device", root)
    updater.refresh()
    info = updater.get_targetinfo(PATH)
    assert info is not None
    assert info.length == 40


def test_targets_keys_apart_from_root_keys(
    server: TufServer, online: CryptoSigner, tmp_path: Path
) -> None:
    roots, targets_keys, publisher = _signers(1), _signers(2), CryptoSigner.generate_ed25519()
    root, targets = owner.new_repository(
        roots, 1, online.public_key, [publisher.public_key], targets_signers=targets_keys
    )
    r = Metadata[Root].from_bytes(root).signed
    assert sorted(r.roles["targets"].keyids) == sorted(s.public_key.keyid for s in targets_keys)
    server.put_root(root)
    server.put_role("targets", targets)
    server.put_role("publishers", _role(publisher))
    updater = server.updater(tmp_path / "device", root)
    updater.refresh()
    assert updater.get_targetinfo(PATH) is not None


@pytest.mark.parametrize(("threshold", "match"), [(0, "between 1 and 2"), (3, "between 1 and 2")])
def test_new_repository_refuses_bad_thresholds(
    online: CryptoSigner, threshold: int, match: str
) -> None:
    with pytest.raises(MetadataError, match=match):
        owner.new_repository(_signers(2), threshold, online.public_key, [online.public_key])


def test_new_repository_refuses_bad_keys(online: CryptoSigner) -> None:
    roots = _signers(1)
    with pytest.raises(MetadataError, match="online key must not be"):
        owner.new_repository(roots, 1, roots[0].public_key, [online.public_key])
    with pytest.raises(MetadataError, match="twice"):
        owner.new_repository(roots * 2, 1, online.public_key, [online.public_key])
    with pytest.raises(MetadataError, match="publisher key"):
        owner.new_repository(roots, 1, online.public_key, [])


def test_rotate_root_is_followed_by_a_device_pinned_at_root_1(
    server: TufServer, online: CryptoSigner, tmp_path: Path
) -> None:
    old, new, publisher = _signers(3), _signers(2), CryptoSigner.generate_ed25519()
    root1, targets = owner.new_repository(old, 2, online.public_key, [publisher.public_key])
    server.put_root(root1)
    server.put_role("targets", targets)
    server.put_role("publishers", _role(publisher))
    updater = server.updater(tmp_path / "device", root1)
    updater.refresh()

    root2 = owner.rotate_root(root1, old[:2], new, 2)
    r2 = Metadata[Root].from_bytes(root2)
    assert r2.signed.version == 2
    assert sorted(r2.signed.roles["root"].keyids) == sorted(s.public_key.keyid for s in new)
    # Signed by a threshold of the old and of the new.
    assert set(r2.signatures) == {s.public_key.keyid for s in old[:2] + new}
    server.put_root(root2)
    device = server.updater(tmp_path / "device", root1)
    device.refresh()
    kept = Metadata[Root].from_file(str(tmp_path / "device" / "root.json"))
    assert kept.signed.version == 2
    assert device.get_targetinfo(PATH) is not None

    # And root 3 is signed by the keys of root 2, the old ones no longer count.
    newer = _signers(1)
    with pytest.raises(MetadataError, match="not root keys of root version 2"):
        owner.rotate_root(root2, old[:2], newer, 1)
    server.put_root(owner.rotate_root(root2, new, newer, 1))
    device = server.updater(tmp_path / "device", root1)
    device.refresh()
    assert Metadata[Root].from_file(str(tmp_path / "device" / "root.json")).signed.version == 3


def test_a_rotation_signed_by_the_old_keys_only_is_refused(
    server: TufServer, online: CryptoSigner, tmp_path: Path
) -> None:
    old, new, publisher = _signers(1), _signers(1), CryptoSigner.generate_ed25519()
    root1, targets = owner.new_repository(old, 1, online.public_key, [publisher.public_key])
    server.put_root(root1)
    server.put_role("targets", targets)
    server.put_role("publishers", _role(publisher))
    # What an attacker holding only the old key (stolen, then rotated away) makes.
    forged = Metadata[Root].from_bytes(owner.rotate_root(root1, old, new, 1))
    forged.signatures.clear()
    forged.sign(old[0])
    server.put_root(forged.to_bytes(JSONSerializer()))
    device = server.updater(tmp_path / "device", root1)
    with pytest.raises(UnsignedMetadataError):
        device.refresh()


def test_rotate_root_refuses_too_few_old_keys_and_can_change_the_online_key(
    online: CryptoSigner,
) -> None:
    old, new = _signers(3), _signers(1)
    root1, _ = owner.new_repository(old, 2, online.public_key, [online.public_key])
    with pytest.raises(MetadataError, match="needs 2 of its keys"):
        owner.rotate_root(root1, old[:1], new, 1)
    with pytest.raises(MetadataError, match="between 1 and 1"):
        owner.rotate_root(root1, old, new, 2)
    other_online = CryptoSigner.generate_ed25519()
    root2 = (
        Metadata[Root]
        .from_bytes(owner.rotate_root(root1, old[:2], new, 1, online_key=other_online.public_key))
        .signed
    )
    assert root2.roles["timestamp"].keyids == [other_online.public_key.keyid]
    assert online.public_key.keyid not in root2.keys  # no key left that no role uses
    with pytest.raises(MetadataError, match="not TUF metadata"):
        owner.rotate_root(b"{}", old, new, 1)
    _, targets = owner.new_repository(old, 1, online.public_key, [online.public_key])
    with pytest.raises(MetadataError, match="targets metadata, not root"):
        owner.rotate_root(targets, old, new, 1)


def test_set_publishers_revokes_the_key_left_out(
    server: TufServer, online: CryptoSigner, tmp_path: Path
) -> None:
    roots, a, b = _signers(1), CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519()
    root, targets1 = owner.new_repository(roots, 1, online.public_key, [a.public_key, b.public_key])
    server.put_root(root)
    server.put_role("targets", targets1)
    server.put_role("publishers", _role(a))
    device = server.updater(tmp_path / "device", root)
    device.refresh()
    assert device.get_targetinfo(PATH) is not None

    targets2 = owner.set_publishers(targets1, roots, [b.public_key], root=root)
    t2 = Metadata[Targets].from_bytes(targets2).signed
    assert t2.version == 2
    assert t2.delegations is not None
    assert t2.delegations.roles is not None
    assert t2.delegations.roles["publishers"].keyids == [b.public_key.keyid]
    assert a.public_key.keyid not in t2.delegations.keys
    server.put_role("targets", targets2)
    device = server.updater(tmp_path / "device", root)
    device.refresh()
    with pytest.raises(UnsignedMetadataError):  # what A signed no longer verifies
        device.get_targetinfo(PATH)
    server.put_role("publishers", _role(b, version=2))
    device = server.updater(tmp_path / "device", root)
    device.refresh()
    assert device.get_targetinfo(PATH) is not None


def test_set_publishers_refuses_the_wrong_targets_key_against_root(online: CryptoSigner) -> None:
    roots = _signers(1)
    root, targets = owner.new_repository(roots, 1, online.public_key, [online.public_key])
    with pytest.raises(MetadataError, match="not a threshold of root version 1"):
        owner.set_publishers(targets, _signers(1), [online.public_key], root=root)
    with pytest.raises(MetadataError, match="at least one publisher key"):
        owner.set_publishers(targets, roots, [], root=root)
    with pytest.raises(MetadataError, match="root metadata, not targets"):
        owner.set_publishers(root, roots, [online.public_key])
