"""``coffer trust new|rotate|publishers|init|status`` as real processes: files and refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root, Targets

from coffer.cli import ExitCode

COFFER = str(Path(sys.executable).parent / "coffer")


def coffer(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    return subprocess.run(
        [COFFER, *map(str, args)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def refused(done: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("coffer: ")
    assert words in lines[0], lines[0]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("keys")
    for name in ("r1", "r2", "r3", "n1", "n2", "online", "p1", "p2"):
        done = coffer("keys", "generate", d / name)
        assert done.returncode == 0, done.stderr
    return d


def new(keys: Path, out: Path, *extra: str | Path) -> subprocess.CompletedProcess[str]:
    return coffer(
        *("trust", "new", "--root-key", keys / "r1.key", "--root-key", keys / "r2.key"),
        *("--root-key", keys / "r3.key", "--online-key", keys / "online.pub"),
        *("--publisher-key", keys / "p1.pub", "--out", out, *extra),
    )


def test_new_writes_root_and_targets_with_a_majority_threshold(keys: Path, tmp_path: Path) -> None:
    done = new(keys, tmp_path, "--expires", "30")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.root.json", "1.targets.json"]
    root = Metadata[Root].from_file(str(tmp_path / "1.root.json")).signed
    assert root.roles["root"].threshold == 2
    assert len(root.roles["root"].keyids) == 3
    online = json.loads((keys / "online.pub").read_text())
    (timestamp_key,) = root.roles["timestamp"].keyids
    assert root.keys[timestamp_key].keyval == online["keyval"]
    targets = Metadata[Targets].from_file(str(tmp_path / "1.targets.json")).signed
    assert (targets.expires - root.expires).total_seconds() < 5
    # Nothing is overwritten, not even one of the two.
    (tmp_path / "1.root.json").unlink()
    kept = (tmp_path / "1.targets.json").read_bytes()
    refused(new(keys, tmp_path), ExitCode.OTHER, "1.targets.json already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1.targets.json"]
    assert (tmp_path / "1.targets.json").read_bytes() == kept


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--threshold", "4"], ExitCode.BAD_REQUEST, "between 1 and 3"),
        (["--threshold", "0"], ExitCode.USAGE, "not a positive whole number"),
        (["--expires", "0"], ExitCode.USAGE, "not a number of days"),
        (["--publisher-key", "absent.pub"], ExitCode.OTHER, "no public key absent.pub"),
        (["--root-key", "absent.key"], ExitCode.OTHER, "no private key absent.key"),
    ],
)
def test_new_refuses_bad_input_and_writes_nothing(
    keys: Path, tmp_path: Path, extra: list[str], code: int, words: str
) -> None:
    done = new(keys, tmp_path, *extra)
    if code == ExitCode.USAGE:  # argparse's own usage message
        assert done.returncode == code
        assert words in done.stderr
    else:
        refused(done, code, words)
    assert list(tmp_path.iterdir()) == []


def test_new_refuses_a_public_key_where_a_private_one_goes_and_a_bad_out(
    keys: Path, tmp_path: Path
) -> None:
    done = coffer(
        *("trust", "new", "--root-key", keys / "r1.pub", "--online-key", keys / "online.pub"),
        *("--publisher-key", keys / "p1.pub", "--out", tmp_path),
    )
    refused(done, ExitCode.OTHER, "r1.pub is world-readable")
    refused(new(keys, tmp_path / "nowhere"), ExitCode.USAGE, "no directory")
    broken = tmp_path / "broken.pub"
    broken.write_text("{}")
    done = new(keys, tmp_path, "--publisher-key", broken)
    refused(done, ExitCode.OTHER, "is not a public key file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.pub"]


def test_rotate_and_publishers(keys: Path, tmp_path: Path) -> None:
    assert new(keys, tmp_path).returncode == 0
    rotate = (
        *("trust", "rotate", "--root", tmp_path / "1.root.json"),
        *("--new-key", keys / "n1.key", "--new-key", keys / "n2.key", "--out", tmp_path),
    )
    refused(coffer(*rotate, "--old-key", keys / "r1.key"), ExitCode.BAD_REQUEST, "needs 2")
    refused(
        coffer(*rotate, "--old-key", keys / "n1.key", "--old-key", keys / "r1.key"),
        ExitCode.BAD_REQUEST,
        "not root keys of root version 1",
    )
    done = coffer(*rotate, "--old-key", keys / "r1.key", "--old-key", keys / "r3.key")
    assert done.returncode == 0, done.stderr
    root2 = Metadata[Root].from_file(str(tmp_path / "2.root.json"))
    assert root2.signed.roles["root"].threshold == 2
    assert len(root2.signatures) == 4
    refused(
        coffer(*rotate, "--old-key", keys / "r1.key", "--old-key", keys / "r3.key"),
        ExitCode.OTHER,
        "2.root.json already exists",
    )

    publishers = (
        *("trust", "publishers", "--targets", tmp_path / "1.targets.json"),
        *("--publisher-key", keys / "p2.pub", "--out", tmp_path),
    )
    refused(
        coffer(*publishers, "--targets-key", keys / "n1.key", "--root", tmp_path / "1.root.json"),
        ExitCode.BAD_REQUEST,
        "not a threshold of root version 1's targets keys",
    )
    assert not (tmp_path / "2.targets.json").exists()
    done = coffer(
        *publishers,
        *("--targets-key", keys / "r1.key", "--targets-key", keys / "r2.key"),
        *("--root", tmp_path / "1.root.json"),
    )
    assert done.returncode == 0, done.stderr
    targets = Metadata[Targets].from_file(str(tmp_path / "2.targets.json")).signed
    assert targets.delegations is not None
    assert targets.delegations.roles is not None
    p2 = json.loads((keys / "p2.pub").read_text())
    (keyid,) = targets.delegations.roles["publishers"].keyids
    assert targets.delegations.keys[keyid].keyval == p2["keyval"]
    refused(
        coffer(
            "trust",
            "rotate",
            "--root",
            tmp_path / "1.targets.json",
            "--old-key",
            keys / "r1.key",
            "--new-key",
            keys / "n1.key",
            "--out",
            tmp_path / "x",
        ),
        ExitCode.USAGE,
        "no directory",
    )
    (tmp_path / "x").mkdir()
    refused(
        coffer(
            "trust",
            "rotate",
            "--root",
            tmp_path / "1.targets.json",
            "--old-key",
            keys / "r1.key",
            "--new-key",
            keys / "n1.key",
            "--out",
            tmp_path / "x",
        ),
        ExitCode.BAD_REQUEST,
        "targets metadata, not root",
    )


def test_init_and_status_need_a_daemon(tmp_path: Path) -> None:
    (tmp_path / "root.json").write_text("{}")
    refused(
        coffer("--socket", tmp_path / "none.sock", "trust", "init", tmp_path / "root.json"),
        ExitCode.DAEMON_UNAVAILABLE,
        "none.sock",
    )
    refused(
        coffer("--socket", tmp_path / "none.sock", "trust", "status"),
        ExitCode.DAEMON_UNAVAILABLE,
        "none.sock",
    )
    refused(coffer("trust", "init", tmp_path / "absent.json"), ExitCode.OTHER, "absent.json")
