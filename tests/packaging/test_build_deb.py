"""What `make deb` builds: names, metadata, layout, a relocated venv, lintian."""

from __future__ import annotations

import base64
import csv
import hashlib
import subprocess
from pathlib import Path

import pytest

from cofferd import __version__

pytestmark = pytest.mark.slow

#: What lintian still says, each for a reason given in packaging/README.md.
KNOWN_LINTIAN = {
    "initial-upload-closes-no-bugs",  # not uploaded to Debian: no ITP bug to close
    "script-not-executable",  # bundled modules with a shebang (requests, OSlash)
    "unusual-interpreter",  # requests/certs.py's `#!/usr/bin/env python`, never run
}


@pytest.fixture(scope="module")
def unpacked(coffer_deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-x", str(coffer_deb), str(root)], check=True)
    return root


def field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_name_version_and_dependencies(coffer_deb: Path) -> None:
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert coffer_deb.name == f"coffer_{__version__}-1_{arch}.deb"
    assert field(coffer_deb, "Package") == "coffer"
    assert field(coffer_deb, "Version") == f"{__version__}-1"
    depends = field(coffer_deb, "Depends")
    assert "python3 (>= 3.11)" in depends
    assert "systemd" in depends


def test_config_is_a_conffile(coffer_deb: Path, tmp_path: Path) -> None:
    subprocess.run(["dpkg-deb", "-e", str(coffer_deb), str(tmp_path / "c")], check=True)
    assert (tmp_path / "c/conffiles").read_text().split() == ["/etc/coffer/cofferd.toml"]
    for script in ("postinst", "prerm", "postrm"):
        assert (tmp_path / "c" / script).stat().st_mode & 0o111


def test_layout(unpacked: Path) -> None:
    assert (unpacked / "usr/bin/cofferd").readlink() == Path("/opt/coffer/bin/cofferd")
    assert (unpacked / "usr/bin/coffer").readlink() == Path("/opt/coffer/bin/coffer")
    for path in (
        "lib/systemd/system/cofferd.service",
        "lib/systemd/system/cofferd.socket",
        "lib/systemd/system/coffer-identity.service",
        "usr/lib/sysusers.d/coffer.conf",
        "usr/lib/tmpfiles.d/coffer.conf",
        "etc/coffer/cofferd.toml",
        "usr/share/doc/coffer/copyright",
        "usr/share/doc/coffer/changelog.Debian.gz",
        "usr/share/doc/coffer/operations.md",
        "usr/share/man/man1/coffer.1.gz",
        "usr/share/man/man8/cofferd.8.gz",
        "usr/share/bash-completion/completions/coffer",
    ):
        assert (unpacked / path).is_file(), path
    # No device secret in the package: each device makes its own at boot.
    assert not list(unpacked.rglob("*.cred"))
    assert not (unpacked / "var/lib/coffer-identity").exists()
    # The reference upstream is for tests and demos, not devices.
    assert not list(unpacked.glob("opt/coffer/lib/python3.11/site-packages/coffer_upstream*"))


def test_the_venv_points_at_the_target_not_the_build(unpacked: Path) -> None:
    venv = unpacked / "opt/coffer"
    cfg = dict(line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines())
    assert cfg["home"] == "/usr/bin"
    assert cfg["include-system-site-packages"] == "false"
    assert (venv / "bin/python3").readlink() == Path("/usr/bin/python3")
    for script in ("cofferd", "coffer"):
        first = (venv / "bin" / script).read_text().splitlines()[0]
        assert first == "#!/opt/coffer/bin/python"
    site = venv / "lib/python3.11/site-packages"
    assert (site / "cofferd/__init__.py").is_file()
    assert (site / "cryptography").is_dir()
    assert not (site / "pip").exists()
    assert not list(venv.rglob("*.pyc"))
    leftovers = subprocess.run(
        [
            "grep",
            "-rlI",
            "-e",
            "/tmp/",
            "-e",
            "/work/",
            str(venv / "bin"),
            str(venv / "pyvenv.cfg"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert leftovers.stdout == ""


def test_every_record_matches_what_is_shipped(unpacked: Path) -> None:
    # Scripts were rewritten and libraries stripped after pip installed them:
    # the RECORDs say so, so importlib.metadata and any checker see the truth.
    site = unpacked / "opt/coffer/lib/python3.11/site-packages"
    records = list(site.glob("*.dist-info/RECORD"))
    assert len(records) > 10
    for record in records:
        for name, digest, size in csv.reader(record.read_text().splitlines()):
            if not digest:
                continue
            data = (site / name).read_bytes()
            want = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert (digest, size) == (f"sha256={want}", str(len(data))), name


def test_lintian_says_only_what_is_known(coffer_deb: Path) -> None:
    proc = subprocess.run(
        ["lintian", "--no-tag-display-limit", str(coffer_deb)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    tags = [line.split()[2] for line in proc.stdout.splitlines() if line[:2] in ("E:", "W:")]
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    assert errors == []
    assert set(tags) <= KNOWN_LINTIAN, proc.stdout
