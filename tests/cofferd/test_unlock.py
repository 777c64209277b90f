"""The unlock workflow in-process, against the reference upstream and the private dockerd.

Images are built ``FROM scratch`` once per module and saved; each test seals
the saved tar, registers (or not) its key upstream and signs its release, and
drives an :class:`UnlockWorkflow` whose engine is the private dockerd and
whose trust is required, the upstream fixture's root pinned, as in cofferd.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cofferd.binary_split import archive, stream
from cofferd.binary_split.archive import ArchiveHeader, ManifestReader
from cofferd.docker_engine import DockerEngine
from cofferd.errors import Conflict, NotFound, ShuttingDown
from cofferd.notify import Notifier
from cofferd.resources.index import INDEX_NAME, Index
from cofferd.resources.upstream import ApiClient, RetryPolicy
from cofferd.settings import Settings
from cofferd.trust.service import Trust
from cofferd.unlock import RECORD_NAME, UnlockWorkflow, _remove_partial
from fixtures.daemon import pin_root
from fixtures.dockerd import PrivateDockerd
from fixtures.trust import archive_target
from fixtures.upstream import Upstream

pytestmark = pytest.mark.docker

BIG = "coffer-test/unlock-big:1"
SMALL = "coffer-test/unlock-small:1"
SEG = stream.SEGMENT_SIZE
TERMINAL = ("ready", "error")


@dataclass(frozen=True)
class Saved:
    one: Path  # BIG alone: a few segments
    two: Path  # BIG and SMALL
    big_id: str
    small_id: str


@pytest.fixture(scope="module")
def saved(dockerd: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saved]:
    base = tmp_path_factory.mktemp("images")
    big_id = dockerd.build_image(BIG, {"blob.bin": os.urandom(3 * SEG)})
    small_id = dockerd.build_image(SMALL, {"hello.txt": b"hello"})
    one = dockerd.save([BIG], base / "one.tar")
    two = dockerd.save([BIG, SMALL], base / "two.tar")
    for tag in (BIG, SMALL):
        dockerd.remove_image(tag)
    yield Saved(one, two, big_id, small_id)
    for tag in (BIG, SMALL):
        dockerd.remove_image(tag)


@pytest.fixture(autouse=True)
def _clean_engine(dockerd: PrivateDockerd) -> Iterator[None]:
    yield
    for tag in (BIG, SMALL):
        dockerd.remove_image(tag)


def seal(tar: Path, out: Path, archive_id: str, key: bytes) -> Path:
    with tar.open("rb") as src, out.open("wb") as dst:
        archive.seal(src, dst, archive_id, key)
    return out


def register(upstream: Upstream, archive_id: str, key: bytes) -> None:
    client = ApiClient(upstream.url)
    try:
        client.login(upstream.publisher.email, upstream.publisher.password)
        client.put_archive_key(archive_id, key)
    finally:
        client.close()


def sign(upstream: Upstream, sealed: Path, archive_id: str, key: bytes) -> None:
    """The publisher signs the archive as it is in ``sealed`` (docs/trust.md)."""
    upstream.sign_release(dict([archive_target(archive_id, key=key, sealed=sealed.read_bytes())]))


def publish(upstream: Upstream, sealed: Path, archive_id: str, key: bytes) -> None:
    """What a publisher does with a sealed archive: its key upstream, its release signed."""
    register(upstream, archive_id, key)
    sign(upstream, sealed, archive_id, key)


class Harness:
    """A workflow on real parts, and what it told systemd."""

    def __init__(
        self, tmp: Path, upstream_url: str, docker_host: str, trust_root: bytes | None
    ) -> None:
        """``trust_root``: pinned, trust required; None: trust off."""
        self.settings = Settings(
            upstream_url=upstream_url,
            archive_path=tmp / "images.coffer",
            state_dir=tmp / "state",
            cache_dir=tmp / "cache",
            docker_host=docker_host,
            upstream_timeout=5,
            trust="off" if trust_root is None else "required",
        )
        self.sent: list[str] = []
        self.clients: list[ApiClient] = []
        if trust_root is not None:
            pin_root(self.settings.state_dir, trust_root)
        self.index = Index(self.settings.state_dir / INDEX_NAME)
        # As cofferd builds it (cofferd.app): the daemon's session for the metadata.
        self.trust = Trust(
            mode=self.settings.trust,
            refresh_interval=self.settings.trust_refresh_interval,
            state_dir=self.settings.state_dir,
            upstream_url=upstream_url,
            index=self.index,
            client=self.client,
        )

    def client(self) -> ApiClient:
        c = ApiClient(self.settings.upstream_url, timeout=5, retry=RetryPolicy(retries=0))
        self.clients.append(c)
        return c

    def workflow(self) -> UnlockWorkflow:
        return UnlockWorkflow.from_settings(
            self.settings, self.client, Notifier(self.sent.append), trust=self.trust
        )

    def close(self) -> None:
        for c in self.clients:
            c.close()
        self.index.close()


def checked(workflow: UnlockWorkflow) -> dict[str, object]:
    """The workflow's status once its background check of the engine is done."""
    workflow.status()
    deadline = time.monotonic() + 30
    while workflow.engine_checked_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return workflow.status()


@pytest.fixture
def harness(tmp_path: Path, upstream: Upstream, dockerd: PrivateDockerd) -> Iterator[Harness]:
    assert upstream.trust is not None
    h = Harness(tmp_path, upstream.url, dockerd.host, upstream.trust.root)
    yield h
    h.close()


def finish(workflow: UnlockWorkflow, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while (status := workflow.status())["state"] not in TERMINAL:
        assert time.monotonic() < deadline, f"unlock still {status} after {timeout}s"
        time.sleep(0.02)
    return status


def states_told(sent: list[str]) -> list[str]:
    """The unlock states in the order the STATUS= lines named them."""
    seen: list[str] = []
    for line in sent:
        for part in line.split("; "):
            if part.startswith("unlock "):
                word = part.split()[1]
                state = "error" if word.startswith("failed") else word
                if not seen or seen[-1] != state:
                    seen.append(state)
    return seen


def test_unlock_loads_the_image_reports_its_tag_and_survives_a_restart(
    harness: Harness, upstream: Upstream, saved: Saved, dockerd: PrivateDockerd
) -> None:
    key = stream.new_key()
    sealed = seal(saved.one, harness.settings.archive_path, "images-1", key)
    publish(upstream, sealed, "images-1", key)
    workflow = harness.workflow()
    assert workflow.status()["state"] == "idle"

    assert workflow.start(upstream.reader.email, upstream.reader.password) == {
        "state": "authenticating"
    }
    status = finish(workflow)

    size = harness.settings.archive_path.stat().st_size
    assert status == {
        "state": "ready",
        "error": None,
        "bytes_done": size,
        "bytes_total": size,
        "images": [BIG],
    }
    engine_view = dockerd.client().images.get(BIG)
    assert engine_view.id == saved.big_id
    assert states_told(harness.sent) == [
        "authenticating",
        "downloading_key",
        "decrypting",
        "loading_images",
        "ready",
    ]
    record = (harness.settings.state_dir / RECORD_NAME).read_text()
    assert json.loads(record) == {
        "archive_id": "images-1",
        "images": [{"id": saved.big_id, "tags": [BIG]}],
    }
    for secret in (key.hex(), upstream.reader.password):
        assert secret not in record
        assert all(secret not in line for line in harness.sent)

    # A restart: status answers at once while the engine is checked in the
    # background; the images are there, so ready once it has been...
    restarted = harness.workflow()
    assert restarted.status()["state"] in ("idle", "ready")
    assert checked(restarted)["state"] == "ready"
    assert restarted.status()["images"] == [BIG]
    # ... and idle once they are gone.
    dockerd.remove_image(BIG)
    assert checked(harness.workflow()) == {
        "state": "idle",
        "error": None,
        "bytes_done": 0,
        "bytes_total": 0,
        "images": [],
    }


def test_a_multi_image_archive_loads_every_image(
    harness: Harness, upstream: Upstream, saved: Saved, dockerd: PrivateDockerd
) -> None:
    key = stream.new_key()
    sealed = seal(saved.two, harness.settings.archive_path, "images-2", key)
    publish(upstream, sealed, "images-2", key)
    workflow = harness.workflow()
    workflow.start(upstream.reader.email, upstream.reader.password)
    status = finish(workflow)
    assert status["state"] == "ready", status
    assert sorted(status["images"]) == sorted([BIG, SMALL])  # type: ignore[arg-type]
    ids = {dockerd.client().images.get(tag).id for tag in (BIG, SMALL)}
    assert ids == {saved.big_id, saved.small_id}


def test_wrong_password_is_an_error_a_person_can_act_on(
    harness: Harness, upstream: Upstream, saved: Saved
) -> None:
    key = stream.new_key()
    sealed = seal(saved.one, harness.settings.archive_path, "images-3", key)
    publish(upstream, sealed, "images-3", key)
    workflow = harness.workflow()
    workflow.start(upstream.reader.email, "not the password")
    status = finish(workflow)
    assert status["state"] == "error"
    assert str(status["error"]).startswith("Unauthorized: ")
    assert "not the password" not in str(status["error"])
    # An error is not final: a later unlock may start.
    workflow.start(upstream.reader.email, upstream.reader.password)
    assert finish(workflow)["state"] == "ready"


def test_an_archive_whose_key_is_not_upstream_fails(
    harness: Harness, upstream: Upstream, saved: Saved, dockerd: PrivateDockerd
) -> None:
    key = stream.new_key()
    sealed = seal(saved.one, harness.settings.archive_path, "never-registered", key)
    sign(upstream, sealed, "never-registered", key)  # signed, its key never uploaded
    before = dockerd.image_ids()
    workflow = harness.workflow()
    workflow.start(upstream.reader.email, upstream.reader.password)
    status = finish(workflow)
    assert status["state"] == "error"
    assert str(status["error"]).startswith("Not found: ")
    assert dockerd.image_ids() == before


def _flip(at: Callable[[int], int]) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        out = bytearray(data)
        out[at(len(data))] ^= 0x40
        return bytes(out)

    return change


_HEADER = ArchiveHeader("images-4").size


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(_flip(lambda n: _HEADER + 100), id="flip-early"),
        pytest.param(_flip(lambda n: n - SEG - 100), id="flip-late"),
        pytest.param(_flip(lambda n: n - 2), id="flip-in-the-last-segment"),
        pytest.param(lambda d: d[: _HEADER + 2 * SEG], id="truncated-at-a-segment"),
        pytest.param(lambda d: d[:-1], id="truncated-by-a-byte"),
    ],
)
def test_a_tampered_archive_never_ends_ready_and_leaves_nothing(
    harness: Harness,
    upstream: Upstream,
    saved: Saved,
    dockerd: PrivateDockerd,
    tamper: Callable[[bytes], bytes],
) -> None:
    key = stream.new_key()
    path = seal(saved.one, harness.settings.archive_path, "images-4", key)
    path.write_bytes(tamper(path.read_bytes()))
    # Signed as it is on disk: the AEAD, not the signed digest, must catch it here
    # (tests/cofferd/test_unlock_trust.py refuses a file other than the signed one).
    publish(upstream, path, "images-4", key)
    before = dockerd.image_ids()

    workflow = harness.workflow()
    workflow.start(upstream.reader.email, upstream.reader.password)
    status = finish(workflow)

    assert status["state"] == "error"
    assert "damaged or has been tampered with" in str(status["error"])
    assert status["images"] == []
    assert "ready" not in states_told(harness.sent)
    assert dockerd.image_ids() == before
    assert not (harness.settings.state_dir / RECORD_NAME).exists()


def test_an_image_tar_the_engine_refuses_is_reported(
    harness: Harness, upstream: Upstream, tmp_path: Path
) -> None:
    not_a_tar = tmp_path / "junk.tar"
    not_a_tar.write_bytes(os.urandom(5000))
    key = stream.new_key()
    sealed = seal(not_a_tar, harness.settings.archive_path, "images-5", key)
    publish(upstream, sealed, "images-5", key)
    workflow = harness.workflow()
    workflow.start(upstream.reader.email, upstream.reader.password)
    status = finish(workflow)
    assert status["state"] == "error"
    assert str(status["error"]).startswith("Docker refused: ")


def test_no_archive_is_not_found(harness: Harness, upstream: Upstream) -> None:
    workflow = harness.workflow()
    with pytest.raises(NotFound, match=r"^Encrypted archive not found$"):
        workflow.start(upstream.reader.email, upstream.reader.password)
    assert workflow.status()["state"] == "idle"


@contextlib.contextmanager
def silent_upstream() -> Iterator[str]:
    """A real listener that accepts and never answers: a login that hangs."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


def test_a_second_unlock_while_one_runs_is_a_conflict(
    tmp_path: Path, dockerd: PrivateDockerd, saved: Saved
) -> None:
    with silent_upstream() as url:
        # A listener that never answers serves no TUF repository: trust off.
        h = Harness(tmp_path, url, dockerd.host, None)
        seal(saved.one, h.settings.archive_path, "images-6", stream.new_key())
        workflow = h.workflow()
        workflow.start("someone@example.com", "pw")
        with pytest.raises(Conflict, match="already running"):
            workflow.start("someone@example.com", "pw")
        assert workflow.status()["state"] == "authenticating"
    # The listener is gone: the login fails and the worker ends.
    status = finish(workflow, timeout=30)
    assert status["state"] == "error"
    assert "upstream" in str(status["error"])
    h.close()


def test_close_cancels_a_running_unlock_and_nothing_is_loaded(
    harness: Harness, upstream: Upstream, saved: Saved, dockerd: PrivateDockerd
) -> None:
    key = stream.new_key()
    sealed = seal(saved.one, harness.settings.archive_path, "images-7", key)
    publish(upstream, sealed, "images-7", key)
    before = dockerd.image_ids()
    workflow = harness.workflow()
    pid = int(dockerd.pidfile.read_text())
    # A stopped engine stops reading the body: the unlock holds in decrypting.
    os.kill(pid, signal.SIGSTOP)
    try:
        workflow.start(upstream.reader.email, upstream.reader.password)
        deadline = time.monotonic() + 30
        while (status := workflow.status())["state"] != "decrypting":
            assert status["state"] not in TERMINAL, status
            assert time.monotonic() < deadline
            time.sleep(0.02)
        workflow.close(timeout=0.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    status = finish(workflow)
    assert status["state"] == "error"
    assert str(status["error"]).startswith("Shutting down: ")
    assert dockerd.image_ids() == before
    with pytest.raises(ShuttingDown):
        workflow.start(upstream.reader.email, upstream.reader.password)


def test_after_a_failed_load_only_new_images_of_the_archive_are_removed(
    dockerd: PrivateDockerd, saved: Saved
) -> None:
    """The engine in use commits nothing from a cut body; should one ever keep
    something, the workflow removes what appeared and came from this tar."""
    with DockerEngine.connect(dockerd.host, load_timeout=120) as engine:
        before = engine.image_ids()
        reader = ManifestReader()
        tar = saved.two.read_bytes()
        reader.feed(tar)
        engine.load(tar[i : i + SEG] for i in range(0, len(tar), SEG))
        assert {saved.big_id, saved.small_id} <= reader.candidate_ids
        # As if SMALL had been there before the load: it must stay.
        _remove_partial(engine, before | {saved.small_id}, reader)
        assert engine.find_image(saved.big_id) is None
        assert engine.find_image(saved.small_id) is not None
