"""Signing a release into the publishers role and publishing it through cofferd's methods."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Targets
from tuf.api.serialization.json import JSONSerializer

from coffer.client import Client
from coffer.errors import Conflict
from cofferd.trust import keys, owner, publish
from cofferd.trust.publish import NotDelegated, PublishError, RaceLost, RoleUntrusted
from cofferd.trust.release import ArchiveRelease, ResourceRelease, parse_target
from fixtures.tuf_server import TufServer


def _release(name: str = "m.onnx", version: int = 1, fill: str = "a") -> dict[str, Any]:
    release = ResourceRelease(
        folder="models",
        name=name,
        version=version,
        small_size=40,
        small_sha256=fill * 64,
        key_commitment="c" * 64,
        big_size=100,
        big_sha256="d" * 64,
        plaintext_size=44,
        segment_size=1 << 20,
        segments_sha256="e" * 64,
    )
    return {"path": release.path, **release.to_target()}


class FakeCofferd:
    """trust.metadata and trust.publish as the contract says, over an in-memory repository.

    ``publish`` takes only version current + 1 and checks the signature
    against the delegation, as the upstream does; ``before_publish`` runs
    first (another publisher winning the race).
    """

    def __init__(self, targets: bytes) -> None:
        self.targets = targets
        self.role: bytes | None = None
        self.calls: list[str] = []
        self.before_publish: list[Any] = []

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, fds: Iterable[int] = ()
    ) -> Any:
        assert params is not None
        self.calls.append(method)
        if method == "trust.metadata":
            assert params == {"role": "publishers"}
            return {
                "targets": self.targets.decode(),
                "role": None if self.role is None else self.role.decode(),
            }
        assert method == "trust.publish"
        if self.before_publish:
            self.before_publish.pop(0)()
        new = Metadata[Targets].from_bytes(params["metadata"].encode())
        Metadata[Targets].from_bytes(self.targets).verify_delegate("publishers", new)
        current = 0 if self.role is None else Metadata.from_bytes(self.role).signed.version
        if new.signed.version != current + 1:
            raise Conflict(f"version {new.signed.version} is not {current + 1}")
        self.role = params["metadata"].encode()
        return {"role": "publishers", "version": new.signed.version}

    def signed(self) -> Targets:
        assert self.role is not None
        return Metadata[Targets].from_bytes(self.role).signed


@pytest.fixture
def keys_(tmp_path: Path) -> dict[str, CryptoSigner]:
    return {n: CryptoSigner.generate_ed25519() for n in ("root", "online", "a", "b", "stranger")}


@pytest.fixture
def repo(keys_: dict[str, CryptoSigner]) -> tuple[bytes, bytes]:
    return owner.new_repository(
        [keys_["root"]],
        1,
        keys_["online"].public_key,
        [keys_["a"].public_key, keys_["b"].public_key],
    )


@pytest.fixture
def cofferd(repo: tuple[bytes, bytes]) -> FakeCofferd:
    return FakeCofferd(repo[1])


def test_first_release_makes_version_1_then_each_adds_one(
    cofferd: FakeCofferd, keys_: dict[str, CryptoSigner]
) -> None:
    assert publish.publish_release(cofferd, _release(), keys_["a"]) == {
        "role": "publishers",
        "version": 1,
    }
    role = cofferd.signed()
    assert list(role.targets) == ["resources/models/m.onnx"]
    assert parse_target(role.targets["resources/models/m.onnx"]).version == 1  # type: ignore[union-attr]
    publish.publish_release(cofferd, _release("other.bin"), keys_["b"])
    assert cofferd.signed().version == 2
    assert set(cofferd.signed().targets) == {
        "resources/models/m.onnx",
        "resources/models/other.bin",
    }
    # A new version of the same resource replaces its target.
    publish.publish_release(cofferd, _release(version=2, fill="f"), keys_["a"])
    role = cofferd.signed()
    assert role.version == 3
    release = parse_target(role.targets["resources/models/m.onnx"])
    assert isinstance(release, ResourceRelease)
    assert (release.version, release.small_sha256) == (2, "f" * 64)
    assert "resources/models/other.bin" in role.targets


def test_expiry_defaults_to_a_year_and_can_be_given(
    cofferd: FakeCofferd, keys_: dict[str, CryptoSigner]
) -> None:
    publish.publish_release(cofferd, _release(), keys_["a"])
    assert cofferd.signed().expires == owner.default_expiry(365)
    publish.publish_release(cofferd, _release(), keys_["a"], expires=owner.default_expiry(days=30))
    assert cofferd.signed().expires == owner.default_expiry(30)


def test_an_archive_release(cofferd: FakeCofferd, keys_: dict[str, CryptoSigner]) -> None:
    release = ArchiveRelease("images-1", 1234, "9" * 64, "8" * 64)
    publish.publish_release(cofferd, {"path": release.path, **release.to_target()}, keys_["a"])
    assert parse_target(cofferd.signed().targets["archives/images-1"]) == release


def test_a_conflict_starts_over_from_the_new_metadata(
    cofferd: FakeCofferd, keys_: dict[str, CryptoSigner]
) -> None:
    def other_publisher_wins() -> None:
        answer = {"targets": cofferd.targets.decode(), "role": None}
        cofferd.role = publish.build_role(answer, _release("theirs.bin"), keys_["b"])

    cofferd.before_publish = [other_publisher_wins]
    pauses: list[float] = []
    result = publish.publish_release(cofferd, _release(), keys_["a"], sleep=pauses.append)
    assert result["version"] == 2
    assert set(cofferd.signed().targets) == {
        "resources/models/m.onnx",
        "resources/models/theirs.bin",
    }
    assert cofferd.calls == ["trust.metadata", "trust.publish"] * 2
    assert len(pauses) == 1


def test_a_role_that_never_settles_gives_up(
    cofferd: FakeCofferd, keys_: dict[str, CryptoSigner]
) -> None:
    def always_conflict(*args: Any, **kwargs: Any) -> Any:
        raise Conflict("busy")

    calls: list[str] = []

    class Busy(FakeCofferd):
        def call(self, method: str, params: Any = None, fds: Iterable[int] = ()) -> Any:
            calls.append(method)
            if method == "trust.publish":
                always_conflict()
            return super().call(method, params, fds)

    with pytest.raises(RaceLost, match="3 times"):
        publish.publish_release(
            Busy(cofferd.targets), _release(), keys_["a"], attempts=3, sleep=lambda _: None
        )
    assert calls.count("trust.publish") == 3


def test_refuses_to_build_on_role_text_the_delegation_did_not_sign(
    cofferd: FakeCofferd, keys_: dict[str, CryptoSigner]
) -> None:
    forged = Metadata(Targets(version=7))
    forged.sign(keys_["stranger"])
    cofferd.role = forged.to_bytes(JSONSerializer())
    with pytest.raises(RoleUntrusted, match="not signed by the keys"):
        publish.publish_release(cofferd, _release(), keys_["a"])
    assert cofferd.calls == ["trust.metadata"]  # nothing published
    # Nor on a role whose signature was made over other content.
    good = FakeCofferd(cofferd.targets)
    publish.publish_release(good, _release(), keys_["a"])
    assert good.role is not None
    tampered = json.loads(good.role)
    tampered["signed"]["targets"]["resources/models/m.onnx"]["length"] = 41
    good.role = json.dumps(tampered).encode()
    good.calls.clear()
    with pytest.raises(RoleUntrusted):
        publish.publish_release(good, _release(version=2), keys_["a"])
    assert good.calls == ["trust.metadata"]


def test_a_role_that_no_longer_verifies_starts_afresh_after_its_version(
    cofferd: FakeCofferd, keys_: dict[str, CryptoSigner]
) -> None:
    """cofferd answers role null and the snapshot's version: its last signer was revoked."""
    answer = {"targets": cofferd.targets.decode(), "role": None, "role_version": 6}
    role = Metadata[Targets].from_bytes(publish.build_role(answer, _release(), keys_["a"]))
    assert role.signed.version == 7
    assert list(role.signed.targets) == ["resources/models/m.onnx"]
    for bad in (0, -1, "6", True):
        with pytest.raises(RoleUntrusted, match="role_version"):
            publish.build_role({**answer, "role_version": bad}, _release(), keys_["a"])


def test_a_key_the_owner_did_not_delegate_to_is_refused(
    cofferd: FakeCofferd, keys_: dict[str, CryptoSigner]
) -> None:
    with pytest.raises(NotDelegated, match="not one the fleet's owner delegated"):
        publish.publish_release(cofferd, _release(), keys_["stranger"])
    with pytest.raises(NotDelegated, match="may not sign elsewhere/x"):
        publish.check_delegated(
            {"targets": cofferd.targets.decode(), "role": None}, "elsewhere/x", keys_["a"]
        )
    assert cofferd.calls == ["trust.metadata"]


def test_an_older_version_is_not_signed_over_a_newer_one(
    cofferd: FakeCofferd, keys_: dict[str, CryptoSigner]
) -> None:
    publish.publish_release(cofferd, _release(version=5), keys_["a"])
    with pytest.raises(PublishError, match="version 5 is signed already"):
        publish.publish_release(cofferd, _release(version=4), keys_["a"])


@pytest.mark.parametrize(
    "broken",
    [
        {"length": 40},
        {"path": "resources/models/m", "length": 40, "hashes": {"sha256": "a" * 64}},
        {"path": 5},
    ],
)
def test_a_malformed_target_is_not_signed(
    cofferd: FakeCofferd, keys_: dict[str, CryptoSigner], broken: dict[str, Any]
) -> None:
    with pytest.raises(PublishError):
        publish.publish_release(cofferd, broken, keys_["a"])
    assert cofferd.role is None


def test_what_it_publishes_an_independent_updater_finds(
    tmp_path: Path, keys_: dict[str, CryptoSigner], repo: tuple[bytes, bytes], cofferd: FakeCofferd
) -> None:
    target = _release()
    publish.publish_release(cofferd, target, keys_["a"])
    assert cofferd.role is not None
    with TufServer(tmp_path / "www", keys_["online"]) as server:
        server.put_root(repo[0])
        server.put_role("targets", repo[1])
        server.put_role("publishers", cofferd.role)
        updater = server.updater(tmp_path / "device", repo[0])
        updater.refresh()
        info = updater.get_targetinfo(target["path"])
    assert info is not None
    assert {"path": info.path, **info.to_dict()} == target


# -- the private key never crosses cofferd's socket ---------------------------


class RecordingSocket:
    """A Unix socket that answers like cofferd (through ``FakeCofferd``) and keeps every byte."""

    def __init__(self, path: Path, fake: FakeCofferd) -> None:
        self.path = path
        self.fake = fake
        self.received = bytearray()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(path))
        self._server.listen()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        with conn:
            buf = b""
            while chunk := conn.recv(65536):
                self.received += chunk
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    request = json.loads(line)
                    try:
                        reply = {"result": self.fake.call(request["method"], request["params"])}
                    except Conflict as exc:
                        reply = {
                            "error": {
                                "code": 409,
                                "message": "Conflict",
                                "data": {"detail": str(exc)},
                            }
                        }
                    conn.sendall(
                        json.dumps({"jsonrpc": "2.0", "id": request["id"], **reply}).encode()
                        + b"\n"
                    )

    def close(self) -> None:
        self._server.close()
        self._thread.join(10)


@pytest.fixture
def recording(tmp_path: Path, cofferd: FakeCofferd) -> Iterator[RecordingSocket]:
    rec = RecordingSocket(tmp_path / "cofferd.sock", cofferd)
    yield rec
    rec.close()


def test_the_private_key_never_crosses_the_socket(
    tmp_path: Path, repo: tuple[bytes, bytes], recording: RecordingSocket
) -> None:
    # The publisher's key, from its file as the CLI loads it; delegated by the owner.
    public = keys.generate(tmp_path / "publisher")
    root_signer = CryptoSigner.generate_ed25519()
    online = CryptoSigner.generate_ed25519()
    _, targets = owner.new_repository([root_signer], 1, online.public_key, [public])
    recording.fake.targets = targets
    signer = keys.load_signer(tmp_path / "publisher.key")
    pem = (tmp_path / "publisher.key").read_bytes()
    private = serialization.load_pem_private_key(pem, password=None)
    raw = private.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    with Client(recording.path, timeout=10) as client:
        result = publish.publish_release(client, _release(), signer)
    assert result["version"] == 1
    sent = bytes(recording.received)
    assert b'"trust.publish"' in sent
    assert b"resources/models/m.onnx" in sent  # the signed metadata did cross
    pem_body = b"".join(pem.splitlines()[1:-1])
    for secret in (
        raw,
        raw.hex().encode(),
        raw.hex().upper().encode(),
        base64.b64encode(raw),
        base64.b64encode(raw).rstrip(b"="),
        base64.urlsafe_b64encode(raw).rstrip(b"="),
        pem_body,
        pem_body[16:48],
    ):
        assert secret not in sent
