"""``coffer-upstream``: ``serve`` and the admin commands, as processes."""

from __future__ import annotations

import json
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import requests

from fixtures import zygote
from fixtures.postgres import Postgres
from fixtures.upstream import COMMAND, Upstream, database_args


def user_add(
    data_dir: Path, *args: str, stdin: str = "pw\n", database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    return zygote.run(
        [*COMMAND, "user", "add", *args, *database_args(data_dir, database_url)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_user_add_refuses_bad_input_and_adds_nothing(upstream: Upstream) -> None:
    def add(*args: str, stdin: str = "pw\n") -> subprocess.CompletedProcess[str]:
        return user_add(upstream.data_dir, *args, stdin=stdin, database_url=upstream.database_url)

    refused = [
        (add("x@example.com", "--role", "reader", stdin=""), 2),
        (add("x@example.com", "--role", "reader", stdin="\n"), 2),
        (add("x@example.com", "--role", "admin"), 2),
        (add("not-an-email", "--role", "reader"), 2),
        (add("a b@example.com", "--role", "reader"), 2),
        (add(upstream.reader.email, "--role", "reader"), 1),
        (add(upstream.reader.email.upper(), "--role", "publisher"), 1),
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
        upstream.data_dir,
        "y@example.com",
        "--role",
        "reader",
        stdin="pass word\r\nmore\n",
        database_url=upstream.database_url,
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
        done = zygote.run(
            [*COMMAND, "serve", "--port", str(port), "--data-dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "Address already in use" in done.stderr
    assert "Traceback" not in done.stderr


def test_user_ls_disable_enable_role(upstream: Upstream) -> None:
    listed = upstream.admin("user", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    users = {u["email"]: u for u in json.loads(listed.stdout)}
    assert users[upstream.reader.email] == {
        "email": upstream.reader.email,
        "role": "reader",
        "disabled": False,
    }
    assert upstream.admin("user", "disable", upstream.reader.email).returncode == 0
    assert upstream.admin("user", "role", upstream.reader.email, "publisher").returncode == 0
    text = upstream.admin("user", "ls").stdout
    assert f"{upstream.reader.email}\tpublisher\tdisabled" in text.splitlines()
    assert "password" not in text
    assert "scrypt" not in text


def test_user_commands_refuse_unknown_users_and_bad_input(upstream: Upstream) -> None:
    for args, code in [
        (("user", "disable", "ghost@example.com"), 1),
        (("user", "enable", "ghost@example.com"), 1),
        (("user", "role", "ghost@example.com", "reader"), 1),
        (("user", "role", upstream.reader.email, "admin"), 2),
    ]:
        done = upstream.admin(*args)
        assert done.returncode == code, (args, done)
        assert done.stderr.strip()
        assert "Traceback" not in done.stderr
    empty = upstream.admin("user", "passwd", upstream.reader.email, stdin="\n")
    assert empty.returncode == 2
    assert upstream.login(upstream.reader)  # unchanged


def test_resource_ls_and_rm_one_version_or_all(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"one")
    upstream.publish("models", "m", b"two")
    upstream.publish("other", "n", b"three")
    listed = json.loads(upstream.admin("resource", "ls", "models", "--json").stdout)
    assert [(r["name"], r["version"], r["big_size"]) for r in listed] == [
        ("m", 1, 3),
        ("m", 2, 3),
    ]
    assert len(upstream.blob_paths()) == 3
    done = upstream.admin("resource", "rm", "models", "m", "--version", "2")
    assert done.returncode == 0, done.stderr
    # Version 1 is current again; the removed part is gone from the store.
    token = upstream.login(upstream.reader)
    current = requests.get(
        f"{upstream.url}/v1/resources/models/m",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert current.json()["version"] == 1
    assert len(upstream.blob_paths()) == 2
    assert upstream.admin("resource", "rm", "models", "m", "--version", "2").returncode == 1
    assert upstream.admin("resource", "rm", "models", "m").returncode == 0
    assert upstream.admin("resource", "ls", "--json").stdout.count('"name"') == 1
    # Version numbers are not given out again.
    assert upstream.publish("models", "m", b"again") == 3


def test_db_upgrade_is_idempotent(upstream: Upstream) -> None:
    for _ in range(2):
        done = upstream.admin("db", "upgrade")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("database at revision ")


def test_serve_with_workers(upstream_factory: Callable[..., Upstream]) -> None:
    upstream = upstream_factory(workers=2)
    token = upstream.login(upstream.reader)
    for _ in range(10):
        response = requests.get(
            f"{upstream.url}/v1/archives/none/key",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 404
    upstream.stop()
    assert upstream.problems() == []


def test_postgresql_needs_db_upgrade_first(postgres: Postgres, tmp_path: Path) -> None:
    url = postgres.create_database()
    args = ["--data-dir", str(tmp_path / "d"), "--database-url", url]
    for command in (["serve", "--port", "0"], ["user", "ls"]):
        done = zygote.run(
            [*COMMAND, *command, *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 1, done
        assert "db upgrade" in done.stderr
        assert "Traceback" not in done.stderr
    upgraded = zygote.run(
        [*COMMAND, "db", "upgrade", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert upgraded.returncode == 0, upgraded.stderr
    listed = zygote.run(
        [*COMMAND, "user", "ls", "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(listed.stdout) == []
