"""``coffer-upstream user add`` and ``serve`` as processes."""

from __future__ import annotations

import socket
import stat
import subprocess
from pathlib import Path

import requests

from fixtures.upstream import COMMAND, Upstream


def user_add(data_dir: Path, *args: str, stdin: str = "pw\n") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "user", "add", *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_user_add_refuses_bad_input_and_adds_nothing(upstream: Upstream) -> None:
    data_dir = upstream.data_dir
    refused = [
        (user_add(data_dir, "x@example.com", "--role", "reader", stdin=""), 2),
        (user_add(data_dir, "x@example.com", "--role", "reader", stdin="\n"), 2),
        (user_add(data_dir, "x@example.com", "--role", "admin"), 2),
        (user_add(data_dir, "not-an-email", "--role", "reader"), 2),
        (user_add(data_dir, "a b@example.com", "--role", "reader"), 2),
        (user_add(data_dir, upstream.reader.email, "--role", "reader"), 1),
        (user_add(data_dir, upstream.reader.email.upper(), "--role", "publisher"), 1),
    ]
    for done, code in refused:
        assert done.returncode == code, done
        assert done.stderr.strip()
        assert "Traceback" not in done.stderr
    response = requests.post(
        f"{upstream.url}/v1/login", json={"email": "x@example.com", "password": "pw"}, timeout=30
    )
    assert response.status_code == 401
    # The refused duplicate did not change the existing user.
    assert upstream.login(upstream.reader)


def test_password_is_the_first_line_of_stdin(upstream: Upstream) -> None:
    done = user_add(
        upstream.data_dir, "y@example.com", "--role", "reader", stdin="pass word\r\nmore\n"
    )
    assert done.returncode == 0, done.stderr
    assert "pass word" not in done.stdout + done.stderr
    response = requests.post(
        f"{upstream.url}/v1/login",
        json={"email": "y@example.com", "password": "pass word"},
        timeout=30,
    )
    assert response.status_code == 200


def test_serve_keeps_its_files_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    done = user_add(data_dir, "z@example.com", "--role", "reader")
    assert done.returncode == 0
    with Upstream(data_dir, *[None] * 2) as upstream:  # type: ignore[arg-type]
        assert upstream.url.startswith("http://127.0.0.1:")
        assert requests.get(f"{upstream.url}/health", timeout=30).ok
    assert stat.S_IMODE((data_dir / "secret").stat().st_mode) == 0o600
    assert len((data_dir / "secret").read_bytes()) == 32
    assert stat.S_IMODE((data_dir / "upstream.sqlite3").stat().st_mode) == 0o600
    for sub in ("blobs", "tmp"):
        assert stat.S_IMODE((data_dir / sub).stat().st_mode) == 0o700
    assert upstream.problems() == []


def test_serve_on_a_busy_port_fails_cleanly(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*COMMAND, "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "Address already in use" in done.stderr
    assert "Traceback" not in done.stderr
