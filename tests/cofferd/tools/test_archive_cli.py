"""``coffer archive seal`` / ``inspect`` as real processes, against the reference upstream."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tuf.ngclient import Updater

from coffer.cli import ExitCode
from coffer.client import Client
from cofferd.binary_split import archive
from cofferd.binary_split.stream import archive_associated_data
from cofferd.errors import NotFound
from cofferd.resources.upstream import ApiClient
from cofferd.trust.release import ArchiveRelease, key_commitment, parse_target
from fixtures.daemon import CofferdProcess
from fixtures.upstream import Upstream

#: The installed entry point, as a user runs it.
COFFER = str(Path(sys.executable).parent / "coffer")
CONFIG = "ab" * 32
TAG = "coffer-test/cli:1"


def image_tar(path: Path, size: int = 3 << 20, manifest: bool = True) -> Path:
    """A tar shaped like ``docker save`` output (the CLI checks the shape, not the engine)."""
    members = [(f"{CONFIG}.json", b"{}"), ("cd" * 32 + "/layer.tar", os.urandom(size))]
    if manifest:
        entry = {"Config": f"{CONFIG}.json", "RepoTags": [TAG], "Layers": []}
        members.append(("manifest.json", json.dumps([entry]).encode()))
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def coffer(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    return subprocess.run(
        [COFFER, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def seal(upstream: Upstream, tar: Path, out: Path, archive_id: str, password: str = "") -> Any:
    return coffer(
        "archive",
        "seal",
        str(tar),
        str(out),
        "--id",
        archive_id,
        "--upstream",
        upstream.url,
        "--email",
        upstream.publisher.email,
        "--password-stdin",
        "--unsigned",
        stdin=(password or upstream.publisher.password) + "\n",
    )


def registered_key(upstream: Upstream, archive_id: str) -> bytes:
    client = ApiClient(upstream.url)
    try:
        client.login(upstream.reader.email, upstream.reader.password)
        return client.get_archive_key(archive_id)
    finally:
        client.close()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_seal_writes_an_archive_whose_registered_key_opens_it(
    upstream: Upstream, tmp_path: Path
) -> None:
    tar = image_tar(tmp_path / "images.tar")
    out = tmp_path / "out" / "images.coffer"
    out.parent.mkdir()
    done = seal(upstream, tar, out, "fleet-1")
    assert done.returncode == 0, done.stderr
    assert "archive id fleet-1" in done.stdout
    assert TAG in done.stdout
    assert done.stderr == ""  # no terminal: no progress line

    key = registered_key(upstream, "fleet-1")
    assert key.hex() not in done.stdout + done.stderr
    with out.open("rb") as src:
        header = archive.read_header(src)
        assert header.archive_id == "fleet-1"
        assert b"".join(archive.decrypt(src, key, header)) == tar.read_bytes()
    assert leftovers(out.parent) == []


def test_seal_takes_its_settings_from_the_environment(upstream: Upstream, tmp_path: Path) -> None:
    tar = image_tar(tmp_path / "images.tar", size=1000)
    out = tmp_path / "a.coffer"
    env = {
        "COFFER_UPSTREAM_URL": upstream.url,
        "COFFER_EMAIL": upstream.publisher.email,
        "COFFER_PASSWORD": upstream.publisher.password,
    }
    done = coffer(
        "--json", "archive", "seal", str(tar), str(out), "--id", "env-1", "--unsigned", env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "archive_id": "env-1",
        "file": str(out),
        "size": out.stat().st_size,
        "images": [TAG],
    }


def test_an_id_with_another_key_is_refused_and_out_is_untouched(
    upstream: Upstream, tmp_path: Path
) -> None:
    tar = image_tar(tmp_path / "images.tar", size=1000)
    first = tmp_path / "first.coffer"
    assert seal(upstream, tar, first, "taken").returncode == 0
    out = tmp_path / "second.coffer"
    out.write_bytes(b"the previous archive")

    done = seal(upstream, tar, out, "taken")
    assert done.returncode == 6  # conflict
    assert "already has a different key" in done.stderr
    assert "choose another --id" in done.stderr
    assert out.read_bytes() == b"the previous archive"
    assert leftovers(tmp_path) == []
    # The first archive still opens with the key registered for it.
    with first.open("rb") as src:
        header = archive.read_header(src)
        b"".join(archive.decrypt(src, registered_key(upstream, "taken"), header))


def test_wrong_password_writes_nothing(upstream: Upstream, tmp_path: Path) -> None:
    tar = image_tar(tmp_path / "images.tar", size=1000)
    out = tmp_path / "x.coffer"
    done = seal(upstream, tar, out, "wrong-pw", password="not-it")
    assert done.returncode == 4
    assert "not-it" not in done.stderr
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_a_tar_that_is_not_from_docker_save_is_refused(upstream: Upstream, tmp_path: Path) -> None:
    tar = image_tar(tmp_path / "plain.tar", size=1000, manifest=False)
    out = tmp_path / "x.coffer"
    done = seal(upstream, tar, out, "no-manifest")
    assert done.returncode == 7
    assert "not a `docker save` archive" in done.stderr
    assert not out.exists()
    assert leftovers(tmp_path) == []
    # Refused before registering: the id is still free.
    assert seal(upstream, image_tar(tmp_path / "ok.tar", 10), out, "no-manifest").returncode == 0


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--id", "../up", "--upstream", "http://127.0.0.1:9"], 7, "invalid archive id"),
        (["--id", "ok", "--email", "a@example.com"], 2, "no upstream"),
        (["--id", "ok", "--upstream", "http://127.0.0.1:9"], 2, "no email"),
        (["--id", "ok", "--upstream", "http://127.0.0.1:9", "--email", "a@b.c"], 8, "upstream"),
    ],
)
def test_bad_invocations_fail_with_a_clear_line(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    tar = image_tar(tmp_path / "images.tar", size=10)
    out = tmp_path / "x.coffer"
    done = coffer("archive", "seal", str(tar), str(out), "--unsigned", *args, stdin="pw\n")
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("coffer: ")
    assert message in done.stderr
    assert done.stderr.count("\n") == 1
    assert not out.exists()


def test_a_missing_input_is_reported(upstream: Upstream, tmp_path: Path) -> None:
    done = seal(upstream, tmp_path / "nope.tar", tmp_path / "x.coffer", "missing")
    assert done.returncode == 1
    assert "nope.tar" in done.stderr
    assert leftovers(tmp_path) == []


def test_progress_shows_on_a_terminal(upstream: Upstream, tmp_path: Path) -> None:
    tar = image_tar(tmp_path / "images.tar", size=3 << 20)
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(
            [
                COFFER,
                "archive",
                "seal",
                str(tar),
                str(tmp_path / "x.coffer"),
                "--id",
                "tty-1",
                "--upstream",
                upstream.url,
                "--email",
                upstream.publisher.email,
                "--password-stdin",
                "--unsigned",
            ],
            input=(upstream.publisher.password + "\n").encode(),
            stdout=subprocess.PIPE,
            stderr=secondary,
            timeout=120,
            check=False,
        )
        os.close(secondary)
        secondary = -1
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
    assert done.returncode == 0
    assert b"sealing images.tar" in shown
    assert b"MiB" in shown


def test_inspect_shows_id_version_and_sizes(upstream: Upstream, tmp_path: Path) -> None:
    tar = image_tar(tmp_path / "images.tar", size=3 << 20)
    out = tmp_path / "i.coffer"
    assert seal(upstream, tar, out, "inspect-me").returncode == 0

    text = coffer("archive", "inspect", str(out))
    assert text.returncode == 0
    assert "archive id:     inspect-me" in text.stdout
    assert "format version: 1" in text.stdout
    assert f"image tar:      {tar.stat().st_size} bytes" in text.stdout

    as_json = json.loads(coffer("--json", "archive", "inspect", str(out)).stdout)
    assert as_json["archive_id"] == "inspect-me"
    assert as_json["format_version"] == 1
    assert as_json["file_size"] == out.stat().st_size
    assert as_json["plaintext_size"] == tar.stat().st_size
    assert as_json["segments"] == 4
    key = registered_key(upstream, "inspect-me").hex()
    assert key not in text.stdout
    assert key not in json.dumps(as_json)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some bytes, not an archive", "not a coffer image archive"),
        (b"COFFERAR\x07\x01x" + bytes(100), "unsupported archive format version 7"),
        (b"COFFERAR\x01\x01x" + bytes(10), "truncated"),
    ],
)
def test_inspect_refuses_what_is_not_an_archive(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "f"
    path.write_bytes(content)
    done = coffer("archive", "inspect", str(path))
    assert done.returncode == 1
    assert message in done.stderr


PLUGIN_PROBE = """\
import sys
from coffer.cli import build_parser
build_parser(sys.argv[1:])
print("cofferd.tools.archive_cli" in sys.modules, "cryptography" in sys.modules)
"""


@pytest.mark.parametrize(
    ("argv", "loaded"),
    [
        (["--socket", "/s", "health"], "False False"),
        (["--timeout", "5", "load", "archive", "-o", "x"], "False False"),
        (["archive", "inspect", "f"], "True True"),
        (["--json", "archive", "--help"], "True True"),
        ([], "True True"),  # no command: the usage lists the plugins
    ],
)
def test_the_plugin_is_imported_only_when_no_built_in_command_is_chosen(
    argv: list[str], loaded: str
) -> None:
    # `coffer health` must not pay for the daemon's crypto.
    done = subprocess.run(
        [sys.executable, "-c", PLUGIN_PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split("\n")[-2] == loaded


def test_seal_with_a_key_signs_the_archive_release(
    trusted_upstream: Upstream, cofferd: Callable[..., CofferdProcess], tmp_path: Path
) -> None:
    """The signed target is the file as written and its key's commitment; a TUF client finds it."""
    upstream = trusted_upstream
    assert upstream.trust is not None
    key_file = tmp_path / "publisher.key"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, upstream.trust.keys.publisher1.private_bytes)
    os.close(fd)
    sock = cofferd(upstream_url=upstream.url, trust="required", trust_root=upstream.trust.root)
    tar = image_tar(tmp_path / "images.tar", size=1 << 20)
    out = tmp_path / "images.coffer"
    base = [
        *("--socket", str(sock.socket_path), "--json", "archive", "seal", str(tar), str(out)),
        *("--id", "signed-1", "--upstream", upstream.url, "--email", upstream.publisher.email),
        "--password-stdin",
    ]
    password = upstream.publisher.password + "\n"
    done = coffer(*base, stdin=password)
    assert done.returncode == ExitCode.USAGE
    assert "devices deliver only signed releases" in done.stderr
    assert not out.exists()

    done = coffer(*base, "--sign-key", str(key_file), stdin=password)
    assert done.returncode == ExitCode.UNAUTHORIZED
    assert "cofferd is not logged in" in done.stderr
    assert not out.exists()
    with Client(sock.socket_path) as c:
        c.login(upstream.publisher.email, upstream.publisher.password)
    done = coffer(*base, "--sign-key", str(key_file), stdin=password)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["signed"] == {"role": "publishers", "version": 1}
    updater = Updater(str(tmp_path / "tuf"), upstream.tuf_url, bootstrap=upstream.trust.root)
    updater.refresh()
    info = updater.get_targetinfo("archives/signed-1")
    assert info is not None
    data = out.read_bytes()
    key = registered_key(upstream, "signed-1")
    assert parse_target(info) == ArchiveRelease(
        archive_id="signed-1",
        length=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        key_commitment=key_commitment(key, archive_associated_data("signed-1")),
    )

    # A key the owner did not delegate to: refused before anything is sealed.
    other = tmp_path / "other"
    assert coffer("keys", "generate", str(other)).returncode == 0
    out2 = tmp_path / "images2.coffer"
    done = coffer(
        *("--socket", str(sock.socket_path), "archive", "seal", str(tar), str(out2)),
        *("--id", "signed-2", "--upstream", upstream.url, "--email", upstream.publisher.email),
        *("--password-stdin", "--sign-key", f"{other}.key"),
        stdin=password,
    )
    assert done.returncode == ExitCode.UNAUTHORIZED, done.stderr
    assert "not one the fleet's owner delegated" in done.stderr
    assert not out2.exists()
    with pytest.raises(NotFound):
        registered_key(upstream, "signed-2")
