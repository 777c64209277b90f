"""The unit files parse cleanly: ``systemd-analyze verify`` with no complaint at all."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "systemd"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A root holding the system's units, ours, and an executable /usr/bin/cofferd.

    verify checks that ExecStart= names an executable, and resolves
    sockets.target and friends, all under --root.
    """
    shutil.copytree("/lib/systemd/system", tmp_path / "lib/systemd/system", symlinks=True)
    for unit in UNITS.glob("coffer*"):
        if unit.suffix in (".service", ".socket"):
            shutil.copy(unit, tmp_path / "lib/systemd/system" / unit.name)
    for program in ("usr/bin/cofferd", "opt/coffer/bin/python"):
        path = tmp_path / program
        path.parent.mkdir(parents=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return tmp_path


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
        check=False,
    )


def test_every_unit_verifies_without_a_word(root: Path) -> None:
    units = sorted(p.name for p in UNITS.glob("coffer*") if p.suffix != ".toml")
    assert units == ["coffer-identity.service", "cofferd.service", "cofferd.socket"]
    proc = verify(root, *units)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_verify_catches_a_bad_directive(root: Path) -> None:
    # The check above can fail: a typo in a directive is reported.
    service = root / "lib/systemd/system/cofferd.service"
    service.write_text(service.read_text().replace("ProtectSystem=strict", "ProtectSystem=strikt"))
    proc = verify(root, "cofferd.service")
    assert "protect system value" in proc.stderr


def test_socket_is_for_group_coffer_only() -> None:
    socket = (UNITS / "cofferd.socket").read_text().splitlines()
    assert "ListenStream=/run/coffer/cofferd.sock" in socket
    assert "SocketMode=0660" in socket
    assert "SocketGroup=coffer" in socket
    assert "WantedBy=sockets.target" in socket


def test_sysusers_and_tmpfiles_entries_parse(tmp_path: Path) -> None:
    # Applied to an empty root, not to this machine: sysusers first, so that
    # tmpfiles finds the owner it names.
    (tmp_path / "etc").mkdir()
    for tool, conf in (
        ("systemd-sysusers", UNITS / "sysusers.d/coffer.conf"),
        ("systemd-tmpfiles", UNITS / "tmpfiles.d/coffer.conf"),
    ):
        argv = [tool, f"--root={tmp_path}", str(conf)]
        if tool == "systemd-tmpfiles":
            argv.insert(1, "--create")
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, (tool, proc.stderr)
        assert "Failed" not in proc.stderr
        assert "Unknown" not in proc.stderr
    passwd = (tmp_path / "etc/passwd").read_text()
    group = (tmp_path / "etc/group").read_text()
    assert any(line.startswith("coffer:") for line in passwd.splitlines())
    docker_line = next(line for line in group.splitlines() if line.startswith("docker:"))
    assert docker_line.split(":")[3] == "coffer"
    uid = int(next(x for x in passwd.splitlines() if x.startswith("coffer:")).split(":")[2])
    for made in ("run/coffer", "var/lib/coffer", "var/cache/coffer"):
        st = (tmp_path / made).stat()
        assert (oct(st.st_mode & 0o7777), st.st_uid) == ("0o750", uid), made


def test_the_identity_is_made_before_cofferd_and_loaded_by_it() -> None:
    identity = (UNITS / "coffer-identity.service").read_text().splitlines()
    assert "Type=oneshot" in identity
    assert "RemainAfterExit=yes" in identity
    assert "Before=cofferd.service" in identity
    assert "StateDirectory=coffer-identity" in identity
    service = (UNITS / "cofferd.service").read_text().splitlines()
    wants = next(line for line in service if line.startswith("Wants="))
    after = next(line for line in service if line.startswith("After="))
    assert "coffer-identity.service" in wants.split()
    assert "coffer-identity.service" in after.split()
    loaded = {line.split("=", 1)[1] for line in service if line.startswith("LoadCredential")}
    assert loaded == {
        "coffer-device-identity:/var/lib/coffer-identity/device-identity.cred",
        "coffer-device-key:/var/lib/coffer-identity/device-key.cred",
        "coffer-identity-state:/var/lib/coffer-identity/state.json",
    }
    # Nothing device-specific under /etc, which images carry.
    assert not any("/etc/" in entry for entry in loaded)
