"""A signed release end to end, as the owner, an operator and a publisher type it.

Real processes throughout: ``coffer`` (its plugins from cofferd's
distribution), cofferd requiring trust, the reference upstream; what the
publisher published is then found by an independent ``tuf.ngclient.Updater``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from tuf.api.metadata import Metadata, Targets
from tuf.ngclient import Updater

from coffer.cli import ExitCode
from coffer.client import Client
from coffer.errors import Conflict
from cofferd.trust.keys import load_signer
from cofferd.trust.publish import publish_release
from fixtures.daemon import CofferdProcess
from fixtures.upstream import Upstream

COFFER = str(Path(sys.executable).parent / "coffer")


def coffer(
    *args: str | Path, sock: Path | None = None, input: bytes | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    full_env.update(env)
    return subprocess.run(
        [COFFER, *(["--socket", str(sock)] if sock else []), *map(str, args)],
        input=None if input is None else input.decode(),
        stdin=subprocess.DEVNULL if input is None else None,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def refused(done: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert done.returncode == code, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("coffer: ")
    assert words in lines[0], lines[0]


def absent(upstream: Upstream, name: str) -> bool:
    """No version of models/NAME upstream (nothing was uploaded)."""
    url = f"{upstream.url}/v1/resources/models/{name}"
    return requests.get(url, headers=upstream.auth(upstream.reader), timeout=30).status_code == 404


@pytest.fixture
def upstream(upstream_factory: Callable[..., Upstream]) -> Upstream:
    """A server with no TUF repository yet: the owner of this fleet installs its own
    root (the fixture's TUF-ready servers already have one, and root 1 is taken)."""
    return upstream_factory(trust=False)


@pytest.fixture
def fleet(
    tmp_path: Path, upstream: Upstream, cofferd: Callable[..., CofferdProcess]
) -> dict[str, Any]:
    """Keys made, root 1 installed upstream and pinned on a device, the publisher logged in."""
    keys = tmp_path / "keys"
    keys.mkdir()
    for name in ("root1", "root2", "publisher", "stranger"):
        ok(coffer("keys", "generate", keys / name))
    online = json.loads(ok(upstream.admin("trust", "online-key", "--json")))  # type: ignore[arg-type]
    (keys / "online.pub").write_text(json.dumps(online["key"]))
    repo = tmp_path / "repo"
    repo.mkdir()
    ok(
        coffer(
            *("trust", "new", "--root-key", keys / "root1.key", "--root-key", keys / "root2.key"),
            *("--threshold", "2", "--online-key", keys / "online.pub"),
            *("--publisher-key", keys / "publisher.pub", "--out", repo),
        )
    )
    for role in ("root", "targets"):
        done = upstream.admin("trust", role, str(repo / f"1.{role}.json"))
        assert done.returncode == 0, done.stderr
    sock = cofferd(trust="required").socket_path
    assert "pinned root version 1" in ok(coffer("trust", "init", repo / "1.root.json", sock=sock))
    status = ok(coffer("trust", "status", sock=sock))
    assert "version 1" in status
    password = upstream.publisher.password.encode() + b"\n"
    ok(coffer("login", "--email", upstream.publisher.email, sock=sock, input=password))
    return {"keys": keys, "repo": repo, "sock": sock}


def test_a_signed_upload_is_delivered_and_found_by_an_independent_updater(
    tmp_path: Path, upstream: Upstream, fleet: dict[str, Any]
) -> None:
    keys, sock = fleet["keys"], fleet["sock"]
    model = tmp_path / "model.onnx"
    model.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    done = coffer("--json", "upload", model, "--sign-key", keys / "publisher.key", sock=sock)
    result = json.loads(ok(done))
    assert result["signed"] == {"role": "publishers", "version": 1}
    target = result["target"]
    assert target["path"] == "resources/models/model.onnx"

    # A TUF client that is not cofferd's, pinned at the same root, finds that target.
    updater = Updater(
        str(tmp_path / "independent"),
        upstream.tuf_url,
        bootstrap=(fleet["repo"] / "1.root.json").read_bytes(),
    )
    updater.refresh()
    info = updater.get_targetinfo(target["path"])
    assert info is not None
    assert {"path": info.path, **info.to_dict()} == target

    # The device delivers it (it checked every field), and the next version too.
    out = tmp_path / "out.bin"
    ok(coffer("load", "model.onnx", "-o", out, sock=sock))
    assert out.read_bytes() == model.read_bytes()
    model.write_bytes(b"version two")
    done = coffer("upload", model, sock=sock, COFFER_SIGN_KEY=str(keys / "publisher.key"))
    assert "signed into publishers version 2" in ok(done)
    ok(coffer("load", "model.onnx", "-o", out, sock=sock))
    assert out.read_bytes() == b"version two"


def test_an_unsigned_upload_is_stored_and_not_delivered(
    tmp_path: Path, fleet: dict[str, Any]
) -> None:
    sock = fleet["sock"]
    model = tmp_path / "plain.bin"
    model.write_bytes(b"nobody signed this")
    refused(
        coffer("upload", model, sock=sock),
        ExitCode.USAGE,
        "devices deliver only signed releases: pass --sign-key, or --unsigned",
    )
    assert "unsigned" in ok(coffer("upload", model, "--unsigned", sock=sock))
    done = coffer("load", "plain.bin", "-o", tmp_path / "out.bin", sock=sock)
    assert done.returncode not in (0, ExitCode.OTHER), done.stderr  # refused, not a crash
    assert not (tmp_path / "out.bin").exists()


def test_a_key_the_owner_did_not_delegate_to_uploads_nothing(
    tmp_path: Path, upstream: Upstream, fleet: dict[str, Any]
) -> None:
    keys, sock = fleet["keys"], fleet["sock"]
    model = tmp_path / "m.bin"
    model.write_bytes(b"x")
    refused(
        coffer("upload", model, "--sign-key", keys / "stranger.key", sock=sock),
        ExitCode.UNAUTHORIZED,
        "not one the fleet's owner delegated",
    )
    assert absent(upstream, "m.bin")
    # A key file that is no key, or world-readable: refused before anything too.
    os.chmod(keys / "stranger.key", 0o644)
    refused(
        coffer("upload", model, "--sign-key", keys / "stranger.key", sock=sock),
        ExitCode.OTHER,
        "world-readable",
    )
    refused(
        coffer("upload", model, "--sign-key", keys / "absent.key", sock=sock),
        ExitCode.OTHER,
        "no private key",
    )
    refused(
        coffer("upload", model, "--sign-key", keys / "publisher.key", "--unsigned", sock=sock),
        ExitCode.USAGE,
        "not both",
    )
    assert absent(upstream, "m.bin")


def test_revoking_the_publisher_stops_delivery(
    tmp_path: Path, upstream: Upstream, fleet: dict[str, Any]
) -> None:
    keys, repo, sock = fleet["keys"], fleet["repo"], fleet["sock"]
    model = tmp_path / "m.bin"
    model.write_bytes(b"signed by the first publisher")
    ok(coffer("upload", model, "--sign-key", keys / "publisher.key", sock=sock))
    ok(coffer("keys", "generate", keys / "second"))
    out = tmp_path / "next"
    out.mkdir()
    ok(
        coffer(
            *("trust", "publishers", "--targets", repo / "1.targets.json"),
            *("--targets-key", keys / "root1.key", "--targets-key", keys / "root2.key"),
            *("--publisher-key", keys / "second.pub", "--root", repo / "1.root.json"),
            *("--out", out),
        )
    )
    done = upstream.admin("trust", "targets", str(out / "2.targets.json"))
    assert done.returncode == 0, done.stderr
    done = coffer("load", "m.bin", "-o", tmp_path / "m.out", sock=sock)
    assert done.returncode not in (0, ExitCode.OTHER), done.stderr
    refused(
        coffer("upload", model, "--sign-key", keys / "publisher.key", sock=sock),
        ExitCode.UNAUTHORIZED,
        "not one the fleet's owner delegated",
    )
    # The remaining publisher signs again: the role starts afresh (nothing the
    # revoked key signed is carried over), and the device delivers it.
    model.write_bytes(b"signed by the second publisher")
    done = coffer("upload", model, "--sign-key", keys / "second.key", sock=sock)
    assert "signed into publishers version 2" in ok(done)
    ok(coffer("load", "m.bin", "-o", tmp_path / "m.out", sock=sock))
    assert (tmp_path / "m.out").read_bytes() == b"signed by the second publisher"


def test_a_publisher_who_loses_the_race_signs_again_over_the_winner(
    tmp_path: Path, upstream: Upstream, fleet: dict[str, Any]
) -> None:
    """Through the real stack: the upstream's 409 reaches coffer, which starts over."""
    keys, sock = fleet["keys"], fleet["sock"]
    signer = load_signer(keys / "publisher.key")
    targets = {}
    with Client(sock) as c:
        for name in ("ours.bin", "theirs.bin"):
            targets[name] = c.upload_bytes(name, "models", name.encode())["target"]

    class Racing:
        """Another publisher publishes just before our first trust.publish."""

        def __init__(self, client: Client) -> None:
            self.client = client
            self.raced = False
            self.conflicts = 0

        def call(self, method: str, params: Any = None, fds: Any = ()) -> Any:
            if method == "trust.publish" and not self.raced:
                self.raced = True
                with Client(sock) as other:
                    publish_release(other, targets["theirs.bin"], signer)
            try:
                return self.client.call(method, params, fds)
            except Conflict:
                self.conflicts += 1
                raise

    with Client(sock) as c:
        racing = Racing(c)
        result = publish_release(racing, targets["ours.bin"], signer)
    assert racing.conflicts == 1
    assert result == {"role": "publishers", "version": 2}  # theirs was 1
    with Client(sock) as c:
        role = Metadata[Targets].from_bytes(c.trust_metadata()["role"].encode()).signed
    assert set(role.targets) == {"resources/models/ours.bin", "resources/models/theirs.bin"}
    ok(coffer("load", "ours.bin", "-o", tmp_path / "o", sock=sock))
    ok(coffer("load", "theirs.bin", "-o", tmp_path / "t", sock=sock))
    assert (tmp_path / "o").read_bytes() == b"ours.bin"
