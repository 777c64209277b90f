"""The ``coffer`` command as a real subprocess against a real cofferd and upstream."""

from __future__ import annotations

import argparse
import json
import os
import pty
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from coffer import cli
from coffer.cli import ExitCode
from fixtures.daemon import CofferdProcess
from fixtures.upstream import Upstream

COFFER = str(Path(sys.executable).parent / "coffer")
Daemon = Callable[..., CofferdProcess]


def coffer(
    *args: str,
    sock: Path | None = None,
    input: bytes | None = None,
    env: dict[str, str] | None = None,
    stderr: int | None = subprocess.PIPE,
) -> subprocess.CompletedProcess[bytes]:
    full_env = {k: v for k, v in os.environ.items() if k != "COFFER_SOCKET"}
    full_env.update(env or {})
    return subprocess.run(
        [COFFER, *(["--socket", str(sock)] if sock else []), *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=full_env,
        timeout=120,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[bytes]) -> str:
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("coffer: ")
    return lines[0]


@pytest.fixture
def sock(cofferd: Daemon) -> Path:
    return cofferd().socket_path


@pytest.fixture
def logged_in(sock: Path, upstream: Upstream) -> Path:
    done = coffer(
        "login",
        "--email",
        upstream.publisher.email,
        sock=sock,
        input=b"%s\n" % (upstream.publisher.password.encode()),
    )
    assert done.returncode == 0, done.stderr
    return sock


def test_help_documents_every_exit_code() -> None:
    done = coffer("--help")
    assert done.returncode == 0
    text = done.stdout.decode()
    for code in ExitCode:
        assert f"\n  {int(code)} " in text
    assert coffer("--version").stdout.decode().startswith("coffer ")
    assert coffer("frobnicate").returncode == ExitCode.USAGE
    done = coffer("--timeout", "0", "health")
    assert done.returncode == ExitCode.USAGE
    assert b"positive" in done.stderr


def test_health_and_status(sock: Path) -> None:
    done = coffer("health", sock=sock)
    assert done.returncode == 0
    assert done.stdout.decode().startswith("ok (cofferd ")
    done = coffer("--json", "status", sock=sock)
    assert done.returncode == 0
    status = json.loads(done.stdout)
    assert status["authenticated"] is False
    assert "model_cache_dir" in status
    # COFFER_SOCKET stands in for --socket; both options read after the command too.
    assert coffer("health", env={"COFFER_SOCKET": str(sock)}).returncode == 0
    done = coffer("status", "--json", "--socket", str(sock))
    assert json.loads(done.stdout) == status
    # The device's identity (the fixture gives each daemon one), not yet enrolled.
    identity = status["identity"]
    text = coffer("status", sock=sock).stdout.decode()
    assert f"identity:        {identity['key_id']} (not enrolled)\n" in text
    assert f"public key:      {identity['public_key']}\n" in text


def test_login_reads_the_password_from_stdin(sock: Path, upstream: Upstream) -> None:
    account = upstream.reader
    done = coffer("login", "--email", account.email, sock=sock, input=b"wrong\n")
    assert done.returncode == ExitCode.UNAUTHORIZED
    one_line_error(done)
    done = coffer(
        "login",
        "--password-stdin",
        "--email",
        account.email,
        sock=sock,
        input=account.password.encode() + b"\n",
    )
    assert done.returncode == 0, done.stderr
    assert account.password.encode() not in done.stdout + done.stderr
    assert json.loads(coffer("--json", "status", sock=sock).stdout)["authenticated"] is True
    done = coffer("login", "--email", account.email, sock=sock, input=b"")
    assert done.returncode == ExitCode.USAGE
    assert "no password" in one_line_error(done)


def test_upload_file_then_load_to_file(
    logged_in: Path, publisher_key: Path, tmp_path: Path
) -> None:
    data = os.urandom(1024 * 1024 + 3)
    (tmp_path / "weights.bin").write_bytes(data)
    done = coffer(
        "upload", "--sign-key", str(publisher_key), str(tmp_path / "weights.bin"), sock=logged_in
    )
    assert done.returncode == 0, done.stderr
    assert b"models/weights.bin" in done.stdout
    out = tmp_path / "out" / "w.bin"
    out.parent.mkdir()
    done = coffer("load", "weights.bin", "-o", str(out), sock=logged_in)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b""  # no progress when stderr is not a terminal
    assert out.read_bytes() == data
    assert out.stat().st_mode & 0o777 == 0o600
    assert os.listdir(out.parent) == ["w.bin"]


def test_upload_from_stdin_then_load_to_stdout(logged_in: Path, publisher_key: Path) -> None:
    data = os.urandom(200_000)
    done = coffer(
        "upload",
        "--sign-key",
        str(publisher_key),
        "-",
        "--name",
        "s.bin",
        "--folder",
        "f",
        sock=logged_in,
        input=data,
    )
    assert done.returncode == 0, done.stderr
    done = coffer("--json", "load", "s.bin", "--folder", "f", "-o", "-", sock=logged_in)
    assert done.returncode == 0, done.stderr
    assert done.stdout == data
    assert json.loads(done.stderr)["size"] == len(data)  # the result goes beside the data
    done = coffer("upload", "--unsigned", "-", sock=logged_in, input=data)
    assert done.returncode == ExitCode.USAGE
    assert "--name" in one_line_error(done)


def test_load_follows_a_symlink_and_writes_into_a_fifo(
    logged_in: Path, publisher_key: Path, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    key = str(publisher_key)
    done = coffer("upload", "--sign-key", key, "-", "--name", "d.bin", sock=logged_in, input=data)
    assert done.returncode == 0, done.stderr
    (tmp_path / "real.bin").write_bytes(b"old")
    (tmp_path / "link.bin").symlink_to("real.bin")
    done = coffer("load", "d.bin", "-o", str(tmp_path / "link.bin"), sock=logged_in)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "link.bin").is_symlink()
    assert (tmp_path / "real.bin").read_bytes() == data
    # Nothing can be renamed over a FIFO (or /dev/null): it is written into.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with subprocess.Popen(
        [COFFER, "--socket", str(logged_in), "load", "d.bin", "-o", str(fifo)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as proc:
        with fifo.open("rb") as reader:
            assert reader.read() == data
        assert proc.wait(60) == 0
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert sorted(os.listdir(tmp_path)) == ["fifo", "link.bin", "real.bin"]


def test_failed_load_leaves_no_file(logged_in: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    done = coffer("load", "absent.bin", "-o", str(out), sock=logged_in)
    assert done.returncode == ExitCode.NOT_FOUND
    one_line_error(done)
    assert os.listdir(tmp_path) == []
    out.write_bytes(b"keep me")
    done = coffer("load", "absent.bin", "-o", str(out), sock=logged_in)
    assert done.returncode == ExitCode.NOT_FOUND
    assert out.read_bytes() == b"keep me"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_failed_load_midway_leaves_no_file(
    logged_in: Path, upstream: Upstream, publisher_key: Path, tmp_path: Path
) -> None:
    # A tampered last segment: earlier plaintext reaches the pipe, then the load fails.
    data = os.urandom(3 * 1024 * 1024)
    key = str(publisher_key)
    done = coffer("upload", "--sign-key", key, "-", "--name", "t.bin", sock=logged_in, input=data)
    assert done.returncode == 0, done.stderr
    (blob,) = upstream.blob_paths()
    raw = bytearray(blob.read_bytes())
    raw[-100] ^= 1
    blob.write_bytes(raw)
    out = tmp_path / "t.bin"
    done = coffer("load", "t.bin", "-o", str(out), sock=logged_in)
    assert done.returncode == ExitCode.UNTRUSTED  # its chunk differs from its signed digest
    one_line_error(done)
    assert os.listdir(tmp_path) == []


def test_bad_name_and_missing_daemon(logged_in: Path, tmp_path: Path) -> None:
    done = coffer("load", "../x", "-o", str(tmp_path / "x"), sock=logged_in)
    assert done.returncode == ExitCode.BAD_REQUEST
    one_line_error(done)
    assert os.listdir(tmp_path) == []
    done = coffer("health", sock=tmp_path / "nothing.sock")
    assert done.returncode == ExitCode.DAEMON_UNAVAILABLE
    assert "no socket at" in one_line_error(done)


def test_upstream_down_and_local_file_errors(cofferd: Daemon, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sock = cofferd(upstream_url=f"http://127.0.0.1:{port}").socket_path
    done = coffer("login", "--email", "a@example.com", sock=sock, input=b"pw\n")
    assert done.returncode == ExitCode.UPSTREAM
    one_line_error(done)
    done = coffer("upload", "--unsigned", str(tmp_path / "absent.bin"), sock=sock)
    assert done.returncode == ExitCode.OTHER
    assert "absent.bin" in one_line_error(done)
    done = coffer("load", "x", "-o", str(tmp_path / "no" / "dir"), sock=sock)
    assert done.returncode == ExitCode.OTHER
    assert "no directory" in one_line_error(done)


def test_progress_shows_on_a_terminal(logged_in: Path, tmp_path: Path) -> None:
    (tmp_path / "p.bin").write_bytes(os.urandom(2 * 1024 * 1024))
    master, slave = pty.openpty()
    try:
        done = coffer("upload", "--unsigned", str(tmp_path / "p.bin"), sock=logged_in, stderr=slave)
        os.close(slave)
        shown = b""
        try:
            while chunk := os.read(master, 4096):
                shown += chunk
        except OSError:  # EIO: the terminal has no writer left
            pass
    finally:
        os.close(master)
    assert done.returncode == 0
    assert b"models/p.bin: " in shown
    assert b"MiB" in shown


def test_unlock_without_an_archive_and_its_status(sock: Path, upstream: Upstream) -> None:
    account = upstream.reader
    done = coffer("unlock", "--email", account.email, sock=sock, input=b"pw\n")
    assert done.returncode == ExitCode.NOT_FOUND
    assert "not found" in one_line_error(done).lower()
    done = coffer("--json", "unlock-status", sock=sock)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "idle"
    done = coffer("unlock-status", sock=sock)
    assert done.stdout.decode().startswith("unlock: idle")


def test_enroll_reads_the_token_from_stdin_and_a_spent_one_is_refused(
    sock: Path, upstream: Upstream, cofferd: Daemon, tmp_path: Path
) -> None:
    made = upstream.admin(
        "enroll-token", "create", "--uses", "1", "--expires", "1h", "--role", "reader", "--json"
    )
    token = json.loads(made.stdout)["token"]
    done = coffer("enroll", sock=sock, input=token.encode() + b"\n")
    assert done.returncode == 0, done.stderr
    assert token.encode() not in done.stdout + done.stderr
    assert done.stdout.startswith(b"enrolled as device d_")
    status = coffer("status", sock=sock).stdout.decode()
    assert "device id:       d_" in status
    # The same key again: the same device (the upstream's re-enrollment is idempotent).
    again = coffer("enroll", "--token-stdin", sock=sock, input=token.encode() + b"\n")
    assert again.returncode == 0, again.stderr
    assert again.stdout == done.stdout
    unknown = "cet_" + "A" * 43
    done = coffer("enroll", "--token-stdin", sock=sock, input=unknown.encode() + b"\n")
    assert done.returncode == ExitCode.UNAUTHORIZED
    assert "unknown, spent or expired" in one_line_error(done)
    assert unknown.encode() not in done.stdout + done.stderr
    done = coffer("enroll", sock=sock, input=b"")
    assert done.returncode == ExitCode.USAGE
    assert "no enrollment token" in one_line_error(done)

    # Another device (another key): the token is spent.
    other = cofferd().socket_path
    done = coffer("enroll", sock=other, input=token.encode() + b"\n")
    assert done.returncode == ExitCode.UNAUTHORIZED
    assert "unknown, spent or expired" in one_line_error(done)

    # Revoked: the next load is refused, saying why.
    device_id = json.loads(coffer("--json", "status", sock=sock).stdout)["identity"]["device_id"]
    assert upstream.admin("device", "revoke", device_id).returncode == 0
    done = coffer("load", "m.bin", "-o", str(tmp_path / "out"), sock=sock)
    assert done.returncode == ExitCode.UNAUTHORIZED
    assert "device revoked" in one_line_error(done)
    assert not (tmp_path / "out").exists()


def test_login_prompts_without_echo_on_a_terminal(sock: Path, upstream: Upstream) -> None:
    account = upstream.reader
    master, slave = pty.openpty()
    with subprocess.Popen(
        [COFFER, "--socket", str(sock), "login", "--email", account.email],
        preexec_fn=lambda: os.login_tty(slave),  # the pty becomes its controlling terminal
    ) as proc:
        os.close(slave)
        seen = b""
        while b"Password for" not in seen:
            seen += os.read(master, 4096)
        os.write(master, account.password.encode() + b"\n")
        assert proc.wait(60) == 0
        try:
            while chunk := os.read(master, 4096):
                seen += chunk
        except OSError:  # EIO: no writer left
            pass
    os.close(master)
    assert f"Password for {account.email}: ".encode() in seen
    assert account.password.encode() not in seen  # not echoed, not printed
    assert b"logged in as" in seen


def test_ctrl_c_during_an_upload_publishes_nothing(logged_in: Path) -> None:
    with subprocess.Popen(
        [COFFER, "--socket", str(logged_in), "upload", "--unsigned", "-", "--name", "cut.bin"],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None
        proc.stdin.write(os.urandom(1024 * 1024))
        proc.stdin.flush()
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == ExitCode.INTERRUPTED
        assert proc.stderr is not None
        assert proc.stderr.read() == b"coffer: interrupted\n"
    done = coffer("load", "cut.bin", "-o", "-", sock=logged_in)
    assert done.returncode == ExitCode.NOT_FOUND


def test_every_wire_code_has_an_exit_code() -> None:
    from coffer import errors as ce
    from coffer.cli import EXIT_CODES, exit_code_for
    from coffer.protocol import ErrorCode

    assert set(EXIT_CODES) == set(ErrorCode)
    assert exit_code_for(ce.DaemonBusy("busy")) == ExitCode.DAEMON_UNAVAILABLE
    assert exit_code_for(ce.DaemonTimeout("slow")) == ExitCode.DAEMON_UNAVAILABLE
    assert exit_code_for(ce.InvalidParams("x")) == ExitCode.BAD_REQUEST
    assert exit_code_for(ce.CofferRPCError("odd", code=499)) == ExitCode.OTHER
    for code in ErrorCode:
        assert exit_code_for(ce.error_from_wire({"code": int(code)})) == EXIT_CODES[code]


def test_signing_needs_cofferds_signer_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client package alone (no cofferd installed) has no signer: a clear refusal."""
    monkeypatch.setattr(cli, "entry_points", lambda group: [])
    monkeypatch.delenv("COFFER_SIGN_KEY", raising=False)
    args = argparse.Namespace(unsigned=False, sign_key="publisher.key", expires=None)
    with pytest.raises(cli.CommandError, match="needs cofferd's tools") as info:
        cli.release_signer(args)
    assert info.value.exit_code == ExitCode.USAGE
    assert (
        cli.release_signer(argparse.Namespace(unsigned=True, sign_key=None, expires=None)) is None
    )
    monkeypatch.setenv("COFFER_SIGN_KEY", "from-env.key")
    seen = []

    class Found:
        def load(self) -> Callable[..., object]:
            return lambda key, days: seen.append((key, days)) or "signer"

    monkeypatch.setattr(
        cli, "entry_points", lambda group: [Found()] if group == cli.SIGNER_GROUP else []
    )
    args = argparse.Namespace(unsigned=False, sign_key=None, expires=30)
    assert cli.release_signer(args) == "signer"
    assert seen == [("from-env.key", 30)]
