"""The .deb, built once per session by packaging/build-deb (as `make deb` does).

``COFFER_TEST_DEB=/path/to/coffer_<version>_<arch>.deb`` tests that package
instead of building one (e.g. a release candidate); the upgrade test still
builds its higher version from the tree.
"""

from __future__ import annotations

import os
import subprocess
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
