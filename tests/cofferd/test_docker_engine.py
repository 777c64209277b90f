"""The Docker boundary against the private dockerd: streaming loads, aborts, errors."""

from __future__ import annotations

import gc
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cofferd.docker_engine import DockerEngine, ImageInfo
from cofferd.errors import DockerRefused, DockerUnavailable
from fixtures.dockerd import PrivateDockerd

pytestmark = pytest.mark.docker

TAG = "coffer-test/engine:1"


class SourceFailed(Exception):
    """Stands for a decryption failure in the body generator."""


@pytest.fixture(scope="module")
def image_tar(dockerd: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A saved two-segment-sized image, absent from the engine afterwards."""
    dockerd.build_image(TAG, {"blob.bin": os.urandom(2 << 20)})
    path = dockerd.save([TAG], tmp_path_factory.mktemp("engine") / "image.tar")
    dockerd.remove_image(TAG)
    return path.read_bytes()


@pytest.fixture
def engine(dockerd: PrivateDockerd) -> Iterator[DockerEngine]:
    with DockerEngine.connect(dockerd.host, load_timeout=120) as engine:
        yield engine
    dockerd.remove_image(TAG)


def pieces(data: bytes, size: int = 64 << 10) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_a_streamed_load_lands_and_can_be_removed(engine: DockerEngine, image_tar: bytes) -> None:
    before = engine.image_ids()
    loaded = engine.load(pieces(image_tar))
    assert [image.tags for image in loaded] == [(TAG,)]
    found = engine.find_image(TAG)
    assert found == ImageInfo(loaded[0].id, (TAG,))
    assert engine.image_ids() == before | {loaded[0].id}

    engine.remove_image(loaded[0].id)
    engine.remove_image(loaded[0].id)  # absent: not an error
    assert engine.find_image(TAG) is None
    assert engine.image_ids() == before


@pytest.mark.parametrize(
    "sent",
    [
        pytest.param(lambda n: n // 2, id="half"),
        pytest.param(lambda n: n - 1024, id="all-but-the-end-of-archive-blocks"),
        pytest.param(lambda n: n, id="every-byte-but-no-final-chunk"),
    ],
)
def test_a_body_cut_by_its_source_loads_nothing(
    engine: DockerEngine, image_tar: bytes, sent: object
) -> None:
    """The engine commits nothing unless the chunked body ends properly.

    Even the whole tar, when the generator raises instead of ending, must not
    leave an image: that is what keeps a tampered last segment from loading.
    """
    assert callable(sent)
    before = engine.image_ids()

    def body() -> Iterator[bytes]:
        yield from pieces(image_tar[: sent(len(image_tar))])
        raise SourceFailed

    with pytest.raises(SourceFailed):
        engine.load(body())
    assert engine.image_ids() == before
    assert engine.find_image(TAG) is None


def test_a_tar_the_engine_cannot_read_is_refused(engine: DockerEngine) -> None:
    before = engine.image_ids()
    with pytest.raises(DockerRefused, match="refused to load the images"):
        engine.load(pieces(b"this is not a tar archive" * 100))
    assert engine.image_ids() == before


def test_an_unknown_image_is_none(engine: DockerEngine) -> None:
    assert engine.find_image("coffer-test/never-built:1") is None


# docker-py leaves the socket of a failed connect() unclosed until it is
# garbage-collected (docker/docker-py#3356); these tests collect it themselves
# and tolerate that one warning.
_LEAKED_SOCKET = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@_LEAKED_SOCKET
def test_an_engine_that_is_not_there_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DockerUnavailable, match="unreachable") as info:
        DockerEngine.connect(f"unix://{tmp_path}/no.sock", load_timeout=5)
    assert "no.sock" in str(info.value)
    del info
    gc.collect()


@_LEAKED_SOCKET
def test_an_engine_that_went_away_is_unavailable() -> None:
    # Connected, then the engine stops: calls fail as unavailable, not as a crash.
    with PrivateDockerd() as other:
        engine = DockerEngine.connect(other.host, load_timeout=10)
    with engine, pytest.raises(DockerUnavailable, match="cannot list the images"):
        engine.image_ids()
    gc.collect()


@_LEAKED_SOCKET
def test_an_engine_that_never_answers_is_unavailable_soon(tmp_path: Path) -> None:
    # Accepts, never answers: quick calls give up after their own short timeout,
    # whatever the (long) load timeout.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(tmp_path / "hung.sock"))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(DockerUnavailable, match="unreachable"):
            DockerEngine.connect(f"unix://{tmp_path}/hung.sock", load_timeout=3600, call_timeout=1)
        assert time.monotonic() - started < 30
    gc.collect()
