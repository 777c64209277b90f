"""The .deb, built once per session by packaging/build-deb (as `make deb` does).

``COFFER_TEST_DEB=/path/to/coffer_<version>_<arch>.deb`` tests that package
instead of building one (e.g. a release candidate); the upgrade test still
builds its higher version from the tree.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def build_deb(out_dir: Path, revision: int) -> Path:
    proc = subprocess.run(
        [str(REPO / "packaging/build-deb")],
        env={**os.environ, "OUT_DIR": str(out_dir), "DEB_REVISION": str(revision)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"packaging/build-deb failed:\n{proc.stderr[-3000:]}", pytrace=False)
    deb = Path(proc.stdout.strip().splitlines()[-1])
    assert deb.parent == out_dir
    return deb


@pytest.fixture(scope="session")
def coffer_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("COFFER_TEST_DEB")
    if given:
        return Path(given)
    return build_deb(tmp_path_factory.mktemp("deb"), revision=1)


@pytest.fixture(scope="session")
def coffer_deb_next(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tree packaged again with a higher version, for the upgrade."""
    return build_deb(tmp_path_factory.mktemp("deb-next"), revision=2)


@pytest.fixture(scope="session")
def upstream_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference upstream and its dependencies, installed into one directory.

    The .deb does not ship the upstream, and a container has no network to
    fetch its dependencies (Starlette, uvicorn, SQLAlchemy...): they are
    installed here, on this Debian 12 host's CPython 3.11 (the container's
    ABI), and copied in whole (:func:`fixtures.systemd.upstream_command`).
    """
    site = tmp_path_factory.mktemp("upstream-site")
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "pip", "install", "--quiet", "--no-compile", "--target", str(site)),
            str(REPO / "client"),
            str(REPO / "upstream"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"installing the upstream for the container failed:\n{proc.stderr[-3000:]}")
    return site
