"""``coffer-upstream trust ...``: the online key, installing root and targets, status.

The rules themselves are test_repository's; here the commands: a refusal
exits 2 with one line and stores nothing, an install prints one line."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

from fixtures import trust as tuf_fixtures
from fixtures.upstream import Upstream


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
    assert tuf_fixtures.online_key(shown["keyid"], shown["key"]).keyid == shown["keyid"]
    assert stat.S_IMODE((server.data_dir / "online.key").stat().st_mode) == 0o600
    again = server.admin("trust", "online-key")
    assert again.stdout.splitlines() == [shown["keyid"], json.dumps(shown["key"])]
    (server.data_dir / "online.key").chmod(0o644)
    exposed = server.admin("trust", "online-key")
    assert exposed.returncode == 1
    assert "chmod 600" in exposed.stderr


def test_install_refuse_and_status(
    upstream_factory: Callable[..., Upstream], tmp_path: Path
) -> None:
    server = upstream_factory(start=False)
    keys = tuf_fixtures.session_keys()
    shown = json.loads(server.admin("trust", "online-key", "--json").stdout)
    online = tuf_fixtures.online_key(shown["keyid"], shown["key"])
    root = tmp_path / "root.json"
    root.write_bytes(tuf_fixtures.sign(tuf_fixtures.root_metadata(online), keys.root2))
    refused = server.admin("trust", "root", str(root))
    assert refused.returncode == 2
    assert refused.stderr == (
        f"coffer-upstream: refused {root}: root is not signed by a threshold of its own keys\n"
    )
    assert refused.stdout == ""

    root.write_bytes(tuf_fixtures.sign(tuf_fixtures.root_metadata(online), keys.root1))
    done = server.admin("trust", "root", str(root))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "installed root version 1; signed a new snapshot and timestamp\n"
    targets = tmp_path / "targets.json"
    targets.write_bytes(tuf_fixtures.sign(tuf_fixtures.targets_metadata(), keys.targets))
    assert server.admin("trust", "targets", str(targets)).returncode == 0
    status = server.admin("trust", "status")
    assert status.returncode == 0, status.stderr
    lines = [line.split("\t") for line in status.stdout.splitlines()]
    assert [line[:2] for line in lines] == [
        ["root", "1"],
        ["targets", "1"],
        ["snapshot", "1"],
        ["timestamp", "1"],
    ]
    assert all(line[2].startswith("expires 20") for line in lines)

    server.start()
    assert server.tuf_get("1.root.json").content == root.read_bytes()
    assert server.tuf_get("1.targets.json").content == targets.read_bytes()
    assert server.tuf_get("1.snapshot.json").status_code == 200
