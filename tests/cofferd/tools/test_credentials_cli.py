"""``coffer credentials``: with a stand-in ``systemd-creds`` that records its argv and stdin."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

FAKE = """#!/bin/sh
printf '%s\\n' "$@" > "$LOG_DIR/argv"
cat > "$LOG_DIR/stdin"
printf 'SEALED'
"""


def run(tmp_path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "systemd-creds"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG_DIR": str(tmp_path)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "coffer"), "credentials", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def test_set_login_encrypts_from_stdin_and_writes_the_dropin(tmp_path: Path) -> None:
    cred, dropin = tmp_path / "etc" / "login.cred", tmp_path / "d" / "login.conf"
    paths = ("--cred-file", str(cred), "--dropin", str(dropin), "--no-restart")
    done = run(
        tmp_path,
        "set-login",
        "--email",
        "ops@x.org",
        "--password-stdin",
        *paths,
        stdin="pa55word\n",
    )
    assert done.returncode == 0, done.stderr
    argv = (tmp_path / "argv").read_text().split("\n")
    assert argv[:2] == ["encrypt", "--name=coffer-login"]
    assert "pa55word" not in (tmp_path / "argv").read_text()
    assert json.loads((tmp_path / "stdin").read_text()) == {
        "email": "ops@x.org",
        "password": "pa55word",
    }
    assert cred.read_bytes() == b"SEALED"
    assert stat.S_IMODE(cred.stat().st_mode) == 0o600
    assert f"LoadCredentialEncrypted=coffer-login:{cred}" in dropin.read_text()

    done = run(tmp_path, "remove-login", *paths)
    assert done.returncode == 0, done.stderr
    assert not cred.exists()
    assert not dropin.exists()


def test_no_password_is_a_usage_error(tmp_path: Path) -> None:
    done = run(
        tmp_path,
        "set-login",
        "--email",
        "ops@x.org",
        "--password-stdin",
        "--cred-file",
        str(tmp_path / "c"),
        "--dropin",
        str(tmp_path / "d"),
        "--no-restart",
    )
    assert done.returncode == 2
    assert not (tmp_path / "c").exists()
