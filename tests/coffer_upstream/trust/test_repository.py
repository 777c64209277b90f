"""The repository's rules in process (coffer_upstream.trust.repository), on the
test's database: what root, targets and a role must be, in which order it is
checked, and the snapshot and timestamp the online key signs and renews."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from tuf.api.metadata import Metadata, Snapshot, Timestamp

from coffer_upstream.db import default_url, make_engine
from coffer_upstream.db.session import Transactions
from coffer_upstream.trust import Conflict, Invalid, OnlineKeyUnknown, Unsigned
from coffer_upstream.trust.files import Files
from coffer_upstream.trust.onlinekey import OnlineKey
from coffer_upstream.trust.repository import Lifetimes, Repository
from fixtures import trust as tuf_fixtures
from fixtures.upstream import Upstream

NOW = 1_800_000_000


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def repository(upstream_factory: Callable[..., Upstream], clock: Clock) -> Iterator[Repository]:
    """A repository on a fresh copy of the template's database (no server started)."""
    server = upstream_factory(start=False)
    engine = make_engine(server.database_url or default_url(server.data_dir))
    online = OnlineKey.load_or_create(server.data_dir)
    yield Repository(Files(Transactions(engine)), online, Lifetimes(100, 10), clock)
    engine.dispose()


def online_of(repository: Repository) -> tuf_fixtures.SSlibKey:
    return repository._online.public


def empty_role() -> bytes:
    keys = tuf_fixtures.session_keys()
    return tuf_fixtures.sign(tuf_fixtures.role_metadata(1, {}), keys.publisher1)


def installed(repository: Repository) -> dict[str, int]:
    return {file.role: file.version for file in repository.status()}


def test_root_rules(repository: Repository) -> None:
    keys = tuf_fixtures.session_keys()
    online = online_of(repository)
    good = tuf_fixtures.root_metadata(online)
    for data, refusal, words in (
        (tuf_fixtures.sign(good, keys.root2), Unsigned, "threshold of its own keys"),
        (tuf_fixtures.sign(good), Unsigned, "threshold of its own keys"),
        (
            tuf_fixtures.sign(tuf_fixtures.root_metadata(keys.root2.public_key), keys.root1),
            Invalid,
            "must name exactly this upstream's online key",
        ),
        (
            tuf_fixtures.sign(
                tuf_fixtures.root_metadata(online, consistent_snapshot=False), keys.root1
            ),
            Invalid,
            "consistent_snapshot",
        ),
        (
            tuf_fixtures.sign(
                tuf_fixtures.root_metadata(online, expires=tuf_fixtures.expiry(-timedelta(1))),
                keys.root1,
            ),
            Invalid,
            "expired",
        ),
        (
            tuf_fixtures.sign(tuf_fixtures.targets_metadata(), keys.root1),
            Invalid,
            "not root metadata: its type is targets",
        ),
        (b"{not json", Invalid, "not valid TUF root metadata"),
        (b'{"signed": {"_type": "root"}, "signatures": []}', Invalid, "not valid TUF root"),
    ):
        with pytest.raises(refusal, match=words):
            repository.install_root(data)
    assert installed(repository) == {}

    assert repository.install_root(tuf_fixtures.sign(good, keys.root1)) == 1
    assert installed(repository) == {"root": 1}  # nothing to snapshot before targets
    two = tuf_fixtures.root_metadata(online, version=2, root_keys=[keys.root2], root_threshold=1)
    with pytest.raises(Unsigned, match="threshold of the current keys"):
        repository.install_root(tuf_fixtures.sign(two, keys.root2))
    with pytest.raises(Unsigned, match="threshold of its own keys"):
        repository.install_root(tuf_fixtures.sign(two, keys.root1))
    three = tuf_fixtures.root_metadata(online, version=3)
    with pytest.raises(Conflict, match="the next must be 2"):
        repository.install_root(tuf_fixtures.sign(three, keys.root1))
    assert installed(repository) == {"root": 1}
    assert repository.install_root(tuf_fixtures.sign(two, keys.root1, keys.root2)) == 2


def test_targets_rules(repository: Repository) -> None:
    keys = tuf_fixtures.session_keys()
    targets = tuf_fixtures.targets_metadata()
    with pytest.raises(Conflict, match="no root is installed yet"):
        repository.install_targets(tuf_fixtures.sign(targets, keys.targets))
    repository.install_root(
        tuf_fixtures.sign(tuf_fixtures.root_metadata(online_of(repository)), keys.root1)
    )
    with pytest.raises(Unsigned, match="threshold of root's keys"):
        repository.install_targets(tuf_fixtures.sign(targets, keys.publisher1))
    stale = tuf_fixtures.targets_metadata(expires=tuf_fixtures.expiry(-timedelta(1)))
    with pytest.raises(Invalid, match="expired"):
        repository.install_targets(tuf_fixtures.sign(stale, keys.targets))
    assert repository.install_targets(tuf_fixtures.sign(targets, keys.targets)) == 1
    assert installed(repository) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
    with pytest.raises(Conflict, match="not above the current 1"):
        repository.install_targets(tuf_fixtures.sign(targets, keys.targets))
    # Any higher version: the owner may skip numbers.
    five = tuf_fixtures.targets_metadata(version=5)
    assert repository.install_targets(tuf_fixtures.sign(five, keys.targets)) == 5
    assert installed(repository) == {"root": 1, "targets": 5, "snapshot": 2, "timestamp": 2}


def ready(repository: Repository) -> None:
    keys = tuf_fixtures.session_keys()
    root = tuf_fixtures.root_metadata(online_of(repository))
    repository.install_root(tuf_fixtures.sign(root, keys.root1))
    repository.install_targets(tuf_fixtures.sign(tuf_fixtures.targets_metadata(), keys.targets))


def test_a_role_put_is_snapshotted_with_its_length_and_hash(repository: Repository) -> None:
    keys = tuf_fixtures.session_keys()
    with pytest.raises(Conflict, match="no top-level targets"):
        repository.put_role(
            "publishers", tuf_fixtures.sign(tuf_fixtures.role_metadata(1, {}), keys.publisher1)
        )
    ready(repository)
    data = tuf_fixtures.sign(tuf_fixtures.role_metadata(1, {}), keys.publisher2)
    assert repository.put_role("publishers", data) == 1
    files = repository.files
    timestamp = Metadata[Timestamp].from_bytes(files.get("timestamp", 2) or b"")
    assert timestamp.signed.snapshot_meta.version == 2
    snapshot_data = files.get("snapshot", 2) or b""
    assert timestamp.signed.snapshot_meta.hashes == {
        "sha256": hashlib.sha256(snapshot_data).hexdigest()
    }
    snapshot = Metadata[Snapshot].from_bytes(snapshot_data).signed
    assert set(snapshot.meta) == {"targets.json", "publishers.json"}
    meta = snapshot.meta["publishers.json"]
    assert (meta.version, meta.length) == (1, len(data))
    assert meta.hashes == {"sha256": hashlib.sha256(data).hexdigest()}
    assert snapshot.expires.timestamp() == NOW + 100
    assert timestamp.signed.expires.timestamp() == NOW + 10


def test_a_role_refusal_comes_in_order(repository: Repository) -> None:
    keys = tuf_fixtures.session_keys()
    ready(repository)
    stale = tuf_fixtures.expiry(-timedelta(1))
    outside = {
        "elsewhere/x": tuf_fixtures.resource_target(
            "m", "x", 1, small=b"", key=bytes(32), big=b"", plaintext_size=0
        ).target
    }
    # Every rule broken at once: the first in the documented order answers.
    worst = tuf_fixtures.role_metadata(3, outside, expires=stale)
    with pytest.raises(Invalid, match="not delegated"):
        repository.put_role("others", tuf_fixtures.sign(worst, keys.targets))
    with pytest.raises(Unsigned, match="not signed by a threshold of the role's keys"):
        repository.put_role("publishers", tuf_fixtures.sign(worst, keys.targets))
    with pytest.raises(Conflict, match="the current is none, so the next must be 1"):
        repository.put_role("publishers", tuf_fixtures.sign(worst, keys.publisher1))
    worst.signed.version = 1
    with pytest.raises(Invalid, match="expired"):
        repository.put_role("publishers", tuf_fixtures.sign(worst, keys.publisher1))
    worst.signed.expires = tuf_fixtures.expiry()
    with pytest.raises(Invalid, match="'elsewhere/x' is not one role publishers may sign"):
        repository.put_role("publishers", tuf_fixtures.sign(worst, keys.publisher1))
    for role in ("root", "targets", "snapshot", "timestamp"):
        with pytest.raises(Invalid, match="not delegated"):
            repository.put_role(role, tuf_fixtures.sign(worst, keys.publisher1))
    assert installed(repository) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}


def test_renewal_at_half_life_never_reuses_a_version(repository: Repository, clock: Clock) -> None:
    assert repository.renew() is None  # nothing installed: nothing to sign
    ready(repository)
    assert repository.renew() is None
    clock.now += 5  # timestamp (10 s) at half its life: not less than half left
    assert repository.renew() is None
    clock.now += 1
    assert repository.renew() == "timestamp"
    assert installed(repository) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 2}
    timestamp = Metadata[Timestamp].from_bytes(repository.files.latest("timestamp").data)  # type: ignore[union-attr]
    assert timestamp.signed.snapshot_meta.version == 1
    assert timestamp.signed.expires.timestamp() == clock.now + 10
    clock.now = NOW + 51  # snapshot (100 s): less than half left
    assert repository.renew() == "snapshot"
    assert installed(repository) == {"root": 1, "targets": 1, "snapshot": 2, "timestamp": 3}


def test_nothing_is_signed_with_a_key_root_does_not_name(
    repository: Repository, upstream_factory: Callable[..., Upstream]
) -> None:
    ready(repository)
    other = upstream_factory(start=False)
    stranger = Repository(
        repository.files, OnlineKey.load_or_create(other.data_dir), Lifetimes(), lambda: NOW
    )
    keys = tuf_fixtures.session_keys()
    with pytest.raises(OnlineKeyUnknown, match=r"was online\.key replaced"):
        stranger.put_role(
            "publishers", tuf_fixtures.sign(tuf_fixtures.role_metadata(1, {}), keys.publisher1)
        )
    assert installed(repository) == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
