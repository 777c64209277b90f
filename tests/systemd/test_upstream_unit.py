"""upstream/systemd/coffer-upstream.service: parses cleanly, hardened, no secret in it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "upstream/systemd/coffer-upstream.service"
EXECUTABLE = "opt/coffer-upstream/bin/coffer-upstream"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root holding the system's units, the upstream's, and the executable it names."""
    shutil.copytree("/lib/systemd/system", tmp_path / "lib/systemd/system", symlinks=True)
    shutil.copy(UNIT, tmp_path / "lib/systemd/system" / UNIT.name)
    executable = tmp_path / EXECUTABLE
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    return tmp_path


def analyze(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", *argv, f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
        timeout=60,
        check=False,
    )


def directives(name: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{name}=")
    ]


def exec_start() -> list[str]:
    text = UNIT.read_text().replace("\\\n", " ")
    line = next(x for x in text.splitlines() if x.startswith("ExecStart="))
    return line.removeprefix("ExecStart=").split()


def test_the_unit_verifies_without_a_word(root: Path) -> None:
    proc = analyze(root, "verify", "--man=no")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_verify_catches_a_bad_directive(root: Path) -> None:
    # The check above can fail: a typo in a directive is reported.
    unit = root / "lib/systemd/system" / UNIT.name
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt"))
    assert "protect system value" in analyze(root, "verify", "--man=no").stderr


def test_exposure_is_low(root: Path) -> None:
    # systemd's own scoring of the sandbox: 0 (locked down) to 10 (exposed).
    proc = analyze(root, "security", "--offline=yes", "--no-pager")
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout + proc.stderr)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 2.0


def test_secrets_travel_as_credentials_not_in_the_environment() -> None:
    assert directives("DynamicUser") == ["yes"]
    assert sorted(c.split(":")[0] for c in directives("LoadCredential")) == [
        "pgpass",
        "s3-credentials",
    ]
    assert "PGPASSFILE=%d/pgpass" in directives("Environment")
    assert "AWS_SHARED_CREDENTIALS_FILE=%d/s3-credentials" in directives("Environment")
    # Nothing in the unit itself looks like a secret's value.
    for value in directives("Environment"):
        name = value.split("=", 1)[0]
        assert not re.search(r"PASSWORD|SECRET_ACCESS_KEY|TOKEN", name), name


def test_it_serves_on_loopback_with_options_the_upstream_knows() -> None:
    argv = exec_start()
    assert argv[0] == f"/{EXECUTABLE}"
    assert argv[1] == "serve"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"  # nginx is the front, not uvicorn
    assert directives("SocketBindAllow") == [f"tcp:{argv[argv.index('--port') + 1]}"]
    usage = subprocess.run(
        [sys.executable, "-m", "coffer_upstream", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for option in (a for a in argv if a.startswith("--")):
        assert option in usage, option
