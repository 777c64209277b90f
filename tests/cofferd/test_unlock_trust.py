"""``unlock`` checks the archive's signed target before any image reaches Docker.

A real :class:`~cofferd.trust.service.Trust` over a hostile upstream (its
TUF repository and archive keys under the test's control), a real sealed
archive on disk; the Docker engine is one that fails the test if it is ever
reached on a refusal, and says so when the checks pass.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cofferd.binary_split import archive
from cofferd.binary_split.stream import archive_associated_data, new_key
from cofferd.errors import DockerUnavailable
from cofferd.notify import Notifier
from cofferd.resources.index import Index
from cofferd.resources.upstream import ApiClient, RetryPolicy
from cofferd.settings import Settings
from cofferd.trust.release import ArchiveRelease, key_commitment
from cofferd.trust.service import Trust
from cofferd.unlock import UnlockWorkflow
from fixtures.daemon import pin_root
from fixtures.tuf_hostile import EMAIL, PASSWORD, HostileUpstream, Repo

ARCHIVE_ID = "device-images-1"


@pytest.fixture
def hostile() -> Iterator[HostileUpstream]:
    up = HostileUpstream(Repo())
    yield up
    up.close()


class Setup:
    def __init__(self, tmp: Path, up: HostileUpstream) -> None:
        self.up = up
        self.key = new_key()
        self.path = tmp / "images.coffer"
        with self.path.open("wb") as dst:
            archive.seal(io.BytesIO(b"\0" * 10240), dst, ARCHIVE_ID, self.key)
        up.repo.archive_keys[ARCHIVE_ID] = self.key
        self.settings = Settings(
            upstream_url=up.url,
            archive_path=self.path,
            state_dir=tmp / "state",
            cache_dir=tmp / "cache",
            upstream_timeout=5,
            trust_refresh_interval=0,
        )
        pin_root(self.settings.state_dir, up.repo.root_json(1))
        self.index = Index(tmp / "state" / "index.sqlite3")
        self.clients: list[ApiClient] = []
        self.docker_reached = 0
        self.trust = Trust(
            mode="required",
            refresh_interval=0,
            state_dir=self.settings.state_dir,
            upstream_url=up.url,
            index=self.index,
            client=self.client,
        )

    def client(self) -> ApiClient:
        c = ApiClient(self.up.url, timeout=5, retry=RetryPolicy(retries=0))
        self.clients.append(c)
        return c

    def engine(self) -> object:
        self.docker_reached += 1
        raise DockerUnavailable("the test's engine: the checks passed")

    def sign(self, *, sealed: bytes | None = None, key: bytes | None = None) -> None:
        data = self.path.read_bytes() if sealed is None else sealed
        self.up.repo.sign_release(
            ArchiveRelease(
                archive_id=ARCHIVE_ID,
                length=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                key_commitment=key_commitment(key or self.key, archive_associated_data(ARCHIVE_ID)),
            )
        )

    def unlock(self) -> dict[str, object]:
        workflow = UnlockWorkflow(
            self.settings,
            self.client,
            self.engine,  # type: ignore[arg-type]
            Notifier(None),
            check_engine=self.engine,  # type: ignore[arg-type]
            trust=self.trust,
        )
        workflow.start(EMAIL, PASSWORD)
        deadline = time.monotonic() + 60
        while (status := workflow.status())["state"] not in ("ready", "error"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        return status

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.index.close()


@pytest.fixture
def setup(tmp_path: Path, hostile: HostileUpstream) -> Iterator[Setup]:
    s = Setup(tmp_path, hostile)
    yield s
    s.close()


def key_asked(up: HostileUpstream) -> int:
    return up.requests[f"GET /v1/archives/{ARCHIVE_ID}/key"]


def test_an_unsigned_archive_never_reaches_docker(setup: Setup) -> None:
    status = setup.unlock()
    assert status["state"] == "error"
    assert str(status["error"]).startswith("Untrusted: ")
    assert "no publisher signed" in str(status["error"])
    assert setup.docker_reached == 0
    assert key_asked(setup.up) == 0  # decided before any key was asked for


def test_an_archive_file_other_than_the_signed_is_refused(setup: Setup) -> None:
    setup.sign()
    data = bytearray(setup.path.read_bytes())
    data[-1] ^= 1
    setup.path.write_bytes(bytes(data))
    status = setup.unlock()
    assert "differs from the signed file" in str(status["error"])
    assert setup.docker_reached == 0


def test_a_key_other_than_the_committed_is_refused(setup: Setup) -> None:
    setup.sign()
    setup.up.repo.archive_keys[ARCHIVE_ID] = new_key()
    status = setup.unlock()
    assert "does not match the signed commitment" in str(status["error"])
    assert setup.docker_reached == 0


def test_a_signed_intact_archive_goes_on_to_docker(setup: Setup) -> None:
    setup.sign()
    status = setup.unlock()
    assert "the checks passed" in str(status["error"])
    assert setup.docker_reached == 1
