"""``coffer-upstream trust ...``: the online key, installing root and targets, status.

Every refusal exits 2 with one line and stores nothing."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from fixtures import trust as tuf_fixtures
from fixtures.upstream import Upstream


def install(upstream: Upstream, what: str, data: bytes, tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / f"{what}.json"
    path.write_bytes(data)
    done = upstream.admin("trust", what, str(path))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 0 or len(lines) == 1, done.stderr
    return done.returncode, done.stderr.strip()


def status(upstream: Upstream) -> list[str]:
    done = upstream.admin("trust", "status")
    assert done.returncode == 0, done.stderr
    return [" ".join(line.split("\t")[:2]) for line in done.stdout.splitlines()]


def test_online_key_is_made_once_and_printed_as_a_tuf_key(
    upstream_factory: Callable[..., Upstream],
) -> None:
    server = upstream_factory(start=False)
    done = server.admin("trust", "online-key", "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["key"]["keytype"] == "ed25519"
    assert shown["key"]["scheme"] == "ed25519"
    assert len(shown["key"]["keyval"]["public"]) == 64
    key = tuf_fixtures.online_key(shown["keyid"], shown["key"])
    assert key.keyid == shown["keyid"]
    mode = stat.S_IMODE((server.data_dir / "online.key").stat().st_mode)
    assert mode == 0o600
    again = server.admin("trust", "online-key")
    assert again.stdout.splitlines() == [shown["keyid"], json.dumps(shown["key"])]
    (server.data_dir / "online.key").chmod(0o644)
    exposed = server.admin("trust", "online-key")
    assert exposed.returncode == 1
    assert "chmod 600" in exposed.stderr


def test_root_and_targets_are_checked_before_anything_is_stored(
    upstream_factory: Callable[..., Upstream], tmp_path: Path
) -> None:
    server = upstream_factory(start=False)
    keys = tuf_fixtures.session_keys()
    shown = json.loads(server.admin("trust", "online-key", "--json").stdout)
    online = tuf_fixtures.online_key(shown["keyid"], shown["key"])
    good = tuf_fixtures.root_metadata(online)
    targets = tuf_fixtures.targets_metadata()

    refused = install(server, "targets", tuf_fixtures.sign(targets, keys.targets), tmp_path)
    assert refused == (
        2,
        f"coffer-upstream: refused {tmp_path}/targets.json: no root is installed yet",
    )
    for data, words in (
        (tuf_fixtures.sign(good, keys.root2), "not signed by a threshold of its own keys"),
        (tuf_fixtures.sign(good), "not signed by a threshold of its own keys"),
        (
            tuf_fixtures.sign(tuf_fixtures.root_metadata(keys.root2.public_key), keys.root1),
            "must name exactly this upstream's online key",
        ),
        (
            tuf_fixtures.sign(
                tuf_fixtures.root_metadata(online, consistent_snapshot=False), keys.root1
            ),
            "consistent_snapshot",
        ),
        (
            tuf_fixtures.sign(
                tuf_fixtures.root_metadata(online, expires=tuf_fixtures.expiry(-timedelta(1))),
                keys.root1,
            ),
            "expired",
        ),
        (tuf_fixtures.sign(targets, keys.targets), "not root metadata: its type is targets"),
        (b"{not json", "not valid TUF root metadata"),
    ):
        code, line = install(server, "root", data, tmp_path)
        assert code == 2, line
        assert words in line
    assert status(server) == []

    assert install(server, "root", tuf_fixtures.sign(good, keys.root1), tmp_path)[0] == 0
    assert status(server) == ["root 1"]  # nothing to snapshot before targets
    code, line = install(server, "targets", tuf_fixtures.sign(targets, keys.publisher1), tmp_path)
    assert code == 2
    assert "not signed by a threshold of root's keys" in line
    assert install(server, "targets", tuf_fixtures.sign(targets, keys.targets), tmp_path)[0] == 0
    assert status(server) == ["root 1", "targets 1", "snapshot 1", "timestamp 1"]
    code, line = install(server, "targets", tuf_fixtures.sign(targets, keys.targets), tmp_path)
    assert (code, "not above the current 1" in line) == (2, True)
    later = tuf_fixtures.root_metadata(online, version=3)
    code, line = install(server, "root", tuf_fixtures.sign(later, keys.root1), tmp_path)
    assert (code, "the next must be 2" in line) == (2, True)
    assert status(server) == ["root 1", "targets 1", "snapshot 1", "timestamp 1"]

    server.start()
    assert server.tuf_get("1.root.json").content == tuf_fixtures.sign(good, keys.root1)
    assert server.tuf_get("1.targets.json").status_code == 200
    assert server.tuf_get("1.snapshot.json").status_code == 200
