"""``unlock`` and ``unlock_status`` over the socket of a real cofferd, with the private dockerd."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coffer.protocol import ErrorCode
from cofferd.binary_split import archive, stream
from cofferd.errors import InvalidParams
from cofferd.resources.upstream import ApiClient
from fixtures.daemon import CofferdProcess
from fixtures.dockerd import PrivateDockerd
from fixtures.trust import archive_target
from fixtures.upstream import Upstream

TAG = "coffer-test/unlock-rpc:1"
SEG = stream.SEGMENT_SIZE
ARCHIVE_ID = "device-images"


class Image:
    def __init__(self, tar: Path, image_id: str, marker: bytes) -> None:
        self.tar = tar
        self.id = image_id
        #: Bytes from inside the image's layer: found in a file, they mean plaintext on disk.
        self.marker = marker


@pytest.fixture(scope="module")
def image(dockerd: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Image]:
    # Big enough that a held load stops well before the end, read-ahead and buffers included.
    blob = os.urandom(12 * SEG)
    image_id = dockerd.build_image(TAG, {"blob.bin": blob})
    tar = dockerd.save([TAG], tmp_path_factory.mktemp("rpc-images") / "image.tar")
    dockerd.remove_image(TAG)
    yield Image(tar, image_id, blob[SEG : SEG + 64])
    dockerd.remove_image(TAG)


@pytest.fixture(autouse=True)
def _clean_engine(request: pytest.FixtureRequest) -> Iterator[None]:
    if not request.node.get_closest_marker("docker"):  # the unit tests below need no engine
        yield
        return
    dockerd: PrivateDockerd = request.getfixturevalue("dockerd")
    yield
    dockerd.remove_image(TAG)


def install_archive(daemon: CofferdProcess, image: Image, upstream: Upstream | None) -> Path:
    """Seal the image tar where the daemon expects its archive; register the key upstream
    and sign the archive's release, as its publisher does (docs/trust.md)."""
    key = stream.new_key()
    path = Path(daemon.env["COFFER_ARCHIVE_PATH"])
    with image.tar.open("rb") as src, path.open("wb") as dst:
        archive.seal(src, dst, ARCHIVE_ID, key)
    if upstream is not None:
        client = ApiClient(upstream.url)
        try:
            client.login(upstream.publisher.email, upstream.publisher.password)
            client.put_archive_key(ARCHIVE_ID, key)
        finally:
            client.close()
        target = archive_target(ARCHIVE_ID, key=key, sealed=path.read_bytes())
        upstream.sign_release(dict([target]))
    return path


def result(response: dict[str, Any]) -> dict[str, Any]:
    assert "result" in response, response
    value: dict[str, Any] = response["result"]
    return value


def wait_for(
    daemon: CofferdProcess, states: tuple[str, ...], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (status := result(daemon.call("unlock_status")))["state"] not in states:
        assert time.monotonic() < deadline, f"still {status} after {timeout}s"
        time.sleep(0.02)
    return status


def plaintext_files(root: Path, marker: bytes) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and marker in path.read_bytes():
            found.append(path)
    return found


@pytest.mark.docker
def test_unlock_to_ready_then_ready_again_after_a_restart(
    cofferd: Callable[..., CofferdProcess],
    upstream: Upstream,
    dockerd: PrivateDockerd,
    image: Image,
) -> None:
    notify_dir = Path(tempfile.mkdtemp(prefix="cfn-"))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_dir / "notify"))
    try:
        daemon = cofferd(
            env={"DOCKER_HOST": dockerd.host}, notify_socket=str(notify_dir / "notify")
        )
        archive_path = install_archive(daemon, image, upstream)
        assert result(daemon.call("unlock_status"))["state"] == "idle"
        unlock_to_ready(daemon, upstream, dockerd, image, archive_path)
        told = drain_status(notify)
    finally:
        notify.close()
        shutil.rmtree(notify_dir, ignore_errors=True)
    # systemd's STATUS= followed the unlock, progress included.
    progress = [t for t in told if "unlock decrypting" in t]
    assert progress
    assert told.index(progress[0]) < told.index(next(t for t in told if "unlock ready" in t))
    assert all(upstream.reader.password not in t for t in told)

    assert daemon.stop() == 0
    same_paths = {k: daemon.env[k] for k in ("COFFER_STATE_DIR", "COFFER_ARCHIVE_PATH")}
    again = cofferd(env={"DOCKER_HOST": dockerd.host, **same_paths})
    # status never waits on the engine: it is asked in the background.
    assert result(again.call("status"))["unlock"]["state"] in ("idle", "ready")
    assert wait_for(again, ("ready",), timeout=30)["images"] == [TAG]
    assert result(again.call("status"))["unlock"]["engine_checked_at"] is not None


def drain_status(sock: socket.socket) -> list[str]:
    """The STATUS= texts received so far, in order."""
    sock.setblocking(False)
    told = []
    with contextlib.suppress(BlockingIOError):
        while True:
            for line in sock.recv(65536).decode().splitlines():
                if line.startswith("STATUS="):
                    told.append(line.removeprefix("STATUS="))
    return told


def unlock_to_ready(
    daemon: CofferdProcess,
    upstream: Upstream,
    dockerd: PrivateDockerd,
    image: Image,
    archive_path: Path,
) -> None:
    params = {"email": upstream.reader.email, "password": upstream.reader.password}
    assert result(daemon.call("unlock", params)) == {"state": "authenticating"}
    status = wait_for(daemon, ("ready", "error"))

    size = archive_path.stat().st_size
    assert status == {
        "state": "ready",
        "error": None,
        "bytes_done": size,
        "bytes_total": size,
        "images": [TAG],
    }
    assert dockerd.client().images.get(TAG).id == image.id
    assert result(daemon.call("status"))["unlock"] == {"state": "ready", "engine_checked_at": None}
    assert plaintext_files(daemon.base, image.marker) == []
    assert upstream.reader.password not in daemon.stderr_text()


@pytest.mark.docker
def test_wrong_password(
    cofferd: Callable[..., CofferdProcess],
    upstream: Upstream,
    dockerd: PrivateDockerd,
    image: Image,
) -> None:
    daemon = cofferd(env={"DOCKER_HOST": dockerd.host})
    install_archive(daemon, image, upstream)
    params = {"email": upstream.reader.email, "password": "wrong-password"}
    assert result(daemon.call("unlock", params)) == {"state": "authenticating"}
    status = wait_for(daemon, ("ready", "error"))
    assert status["state"] == "error"
    assert status["error"].startswith("Unauthorized: ")
    assert "wrong-password" not in daemon.stderr_text()


@pytest.mark.docker
def test_no_archive_is_not_found(
    cofferd: Callable[..., CofferdProcess], upstream: Upstream, dockerd: PrivateDockerd
) -> None:
    daemon = cofferd(env={"DOCKER_HOST": dockerd.host})
    response = daemon.call("unlock", {"email": "a@example.com", "password": "x"})
    assert response["error"]["code"] == ErrorCode.NOT_FOUND
    assert response["error"]["data"]["detail"] == "Encrypted archive not found"
    assert result(daemon.call("unlock_status"))["state"] == "idle"


@pytest.mark.docker
@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"email": "a@example.com"}, ErrorCode.INVALID_PARAMS),
        ({"email": "a@example.com", "password": 5}, ErrorCode.INVALID_PARAMS),
        ({"email": "", "password": "x"}, ErrorCode.INVALID_PARAMS),
        ({"email": "a@example.com", "password": "x", "extra": 1}, ErrorCode.INVALID_PARAMS),
    ],
)
def test_bad_params_are_refused(
    cofferd: Callable[..., CofferdProcess], params: dict[str, Any], code: int
) -> None:
    daemon = cofferd(upstream_url="http://127.0.0.1:9")
    assert daemon.call("unlock", params)["error"]["code"] == code


@pytest.mark.docker
def test_a_second_unlock_while_one_runs_is_a_conflict(
    cofferd: Callable[..., CofferdProcess], dockerd: PrivateDockerd, image: Image
) -> None:
    # An upstream that accepts and never answers holds the first unlock in authenticating.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        daemon = cofferd(upstream_url=url, env={"DOCKER_HOST": dockerd.host})
        install_archive(daemon, image, None)
        params = {"email": "a@example.com", "password": "pw"}
        assert result(daemon.call("unlock", params)) == {"state": "authenticating"}
        response = daemon.call("unlock", params)
        assert response["error"]["code"] == ErrorCode.CONFLICT
        assert "already running" in response["error"]["data"]["detail"]
    assert wait_for(daemon, ("error",), timeout=60)["state"] == "error"


@pytest.mark.docker
def test_docker_engine_down_is_an_error_and_leaves_nothing(
    cofferd: Callable[..., CofferdProcess], upstream: Upstream, image: Image, tmp_path: Path
) -> None:
    daemon = cofferd(env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    install_archive(daemon, image, upstream)
    params = {"email": upstream.reader.email, "password": upstream.reader.password}
    result(daemon.call("unlock", params))
    status = wait_for(daemon, ("ready", "error"))
    assert status["state"] == "error"
    assert status["error"].startswith("Docker unavailable: ")
    assert not (Path(daemon.env["COFFER_STATE_DIR"]) / "unlock.json").exists()
    assert plaintext_files(daemon.base, image.marker) == []


def wait_stalled(daemon: CofferdProcess, quiet: float = 0.5) -> dict[str, Any]:
    """Wait until the unlock's progress stops moving: its sends block."""
    last = result(daemon.call("unlock_status"))
    deadline = time.monotonic() + 60
    while True:
        time.sleep(quiet)
        now = result(daemon.call("unlock_status"))
        if now == last:
            return now
        assert time.monotonic() < deadline, f"the unlock never stalled: {now}"
        last = now


class HoldingRelay:
    """A Unix-socket relay to the engine that holds an image load's body after ``hold_after`` bytes.

    The one fault no real part gives on cue: an engine that stops reading
    mid-stream. Until :meth:`release`, cofferd's sends block once the socket
    buffers fill, so the unlock sits in ``decrypting`` with part of the tar sent.
    """

    def __init__(self, target: Path, path: Path, hold_after: int) -> None:
        self.target = target
        self.path = path
        self.hold_after = hold_after
        self.held = threading.Event()
        self._release = threading.Event()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        self._open: list[socket.socket] = [self._server]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def release(self) -> None:
        self._release.set()

    def close(self) -> None:
        self._release.set()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            engine.connect(str(self.target))
            self._open += [client, engine]
            threading.Thread(target=self._pump, args=(client, engine, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(engine, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, request_side: bool) -> None:
        loading, sent = False, 0
        try:
            while data := src.recv(1 << 16):
                loading = loading or (request_side and b"/images/load" in data)
                if loading and sent + len(data) > self.hold_after and not self._release.is_set():
                    self.held.set()
                    self._release.wait()
                dst.sendall(data)
                sent += len(data) if loading else 0
            dst.shutdown(socket.SHUT_WR)  # pass the end on: a cut body stays cut
        except OSError:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def relay(
    dockerd: PrivateDockerd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HoldingRelay]:
    base = Path(tempfile.mkdtemp(prefix="relay-", dir="/tmp"))  # short: AF_UNIX paths are
    relay = HoldingRelay(dockerd.socket, base / "d.sock", hold_after=2 * SEG)
    yield relay
    relay.close()
    shutil.rmtree(base, ignore_errors=True)


def unlock_until_held(
    daemon: CofferdProcess, image: Image, upstream: Upstream, relay: HoldingRelay
) -> dict[str, Any]:
    """Install the archive, start an unlock, and return its status once the relay holds it."""
    install_archive(daemon, image, upstream)
    params = {"email": upstream.reader.email, "password": upstream.reader.password}
    result(daemon.call("unlock", params))
    assert relay.held.wait(60), wait_for(daemon, ("ready", "error"))
    return wait_stalled(daemon)


@pytest.mark.docker
def test_sigterm_mid_unlock_cancels_it_and_the_engine_loads_nothing(
    cofferd: Callable[..., CofferdProcess],
    upstream: Upstream,
    dockerd: PrivateDockerd,
    image: Image,
    relay: HoldingRelay,
) -> None:
    daemon = cofferd(env={"DOCKER_HOST": relay.host, "COFFER_SHUTDOWN_GRACE": "10"})
    before = dockerd.image_ids()
    status = unlock_until_held(daemon, image, upstream, relay)
    assert status["state"] == "decrypting"
    assert 2 * SEG < status["bytes_done"] < status["bytes_total"]

    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)  # cofferd is stopping, its worker blocked in a send
    relay.release()
    assert daemon.stop(timeout=30) == 0
    log = daemon.stderr_text()
    assert "unlock failed: Shutting down: cofferd is shutting down" in log
    assert "did not stop" not in log
    assert plaintext_files(daemon.base, image.marker) == []
    # The engine got a body that never ended: it drops it, and its scratch copy.
    deadline = time.monotonic() + 30
    while list((dockerd.data_root / "tmp").iterdir()):
        assert time.monotonic() < deadline, "the engine kept the cut load's temp files"
        time.sleep(0.1)
    assert dockerd.image_ids() == before


@pytest.mark.docker
def test_sigterm_while_the_engine_hangs_still_exits_and_loads_nothing(
    cofferd: Callable[..., CofferdProcess],
    upstream: Upstream,
    dockerd: PrivateDockerd,
    image: Image,
    relay: HoldingRelay,
) -> None:
    # The worker cannot see the cancel while its send blocks; after the grace the
    # process exits anyway, and the cut connection is the abort.
    daemon = cofferd(env={"DOCKER_HOST": relay.host, "COFFER_SHUTDOWN_GRACE": "1"})
    before = dockerd.image_ids()
    assert unlock_until_held(daemon, image, upstream, relay)["state"] == "decrypting"
    assert daemon.stop(signal.SIGTERM, timeout=30) == 0
    assert "did not stop within" in daemon.stderr_text()
    relay.release()
    assert plaintext_files(daemon.base, image.marker) == []
    deadline = time.monotonic() + 30
    while list((dockerd.data_root / "tmp").iterdir()):
        assert time.monotonic() < deadline, "the engine kept the cut load's temp files"
        time.sleep(0.1)
    assert dockerd.image_ids() == before


# -- unit tests against fake services (conftest.py) ----------------------------


def test_unlock_hands_the_credentials_to_the_workflow_only(app, invoke) -> None:
    assert invoke("unlock", email="a@b.c", password="pw") == {"state": "authenticating"}
    assert app.unlock.started == [("a@b.c", "pw")]
    assert invoke("unlock_status")["state"] == "authenticating"
    with pytest.raises(InvalidParams):
        invoke("unlock", email="a@b.c", password="")
    assert len(app.unlock.started) == 1
