"""``coffer keys generate`` as a real process."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from coffer.cli import ExitCode

COFFER = str(Path(sys.executable).parent / "coffer")


def coffer(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    return subprocess.run(
        [COFFER, *map(str, args)], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def refused(done: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    assert done.stderr.startswith("coffer: ")
    assert done.stderr.count("\n") == 1
    assert words in done.stderr


def test_keys_generate_refuses_to_overwrite(tmp_path: Path) -> None:
    assert coffer("keys", "generate", tmp_path / "k").returncode == 0
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    before = (tmp_path / "k.key").read_bytes()
    refused(coffer("keys", "generate", tmp_path / "k"), ExitCode.OTHER, "already exists")
    assert (tmp_path / "k.key").read_bytes() == before
    refused(coffer("keys", "generate", tmp_path / "k.key"), ExitCode.USAGE, "without .key")
    done = coffer("--json", "keys", "generate", tmp_path / "j")
    result = json.loads(done.stdout)
    assert result["private"].endswith("j.key")
    assert len(result["keyid"]) == 64
