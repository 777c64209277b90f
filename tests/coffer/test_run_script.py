"""``make run``'s script as a real subprocess: start, use what it prints, stop."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "run.py"


class Run:
    def __init__(self, run_dir: Path, env: dict[str, str] | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), "--run-dir", str(run_dir)],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.out = ""

    def read_until(self, marker: str, timeout: float = 60) -> str:
        """Stdout up to at least the first line holding ``marker``."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()  # raw reads: select sees no buffered data
        deadline = time.monotonic() + timeout
        while not re.search(f"{re.escape(marker)}.*\n", self.out):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                pytest.fail(f"no {marker!r} in time; got:\n{self.out}")
            chunk = os.read(fd, 65536).decode()
            if not chunk:
                assert self.proc.stderr is not None
                pytest.fail(f"run.py ended:\n{self.out}\n{self.proc.stderr.read().decode()}")
            self.out += chunk
        return self.out

    def pids(self) -> dict[str, int]:
        return {m[0]: int(m[1]) for m in re.findall(r"started (\S+) \(pid (\d+)\)", self.out)}

    def commands(self) -> list[str]:
        """The indented shell lines after "Try"."""
        block = self.out.split("Try, in another shell from this directory:\n", 1)[1]
        return [line.strip() for line in block.split("\n\n", 1)[0].splitlines()]

    def finish(self, timeout: float = 60) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, self.out + out.decode(), err.decode()


def gone(pid: int) -> bool:
    """No such process, or only a zombie left for its (gone) parent to reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"


def sh(lines: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COFFER_")}
    return subprocess.run(
        ["bash", "-euc", "\n".join(lines)],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_printed_commands_work_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = Run(run_dir)
    try:
        out = run.read_until("Ctrl-C stops both")
        password = re.search(r"^Password: (\S+)$", out, re.M)
        assert password is not None
        export, health, login, upload, load, status = run.commands()
        assert export.startswith("export COFFER_SOCKET=")
        assert sh([export, health]).returncode == 0
        done = sh([export, login], stdin=password[1] + "\n")
        assert done.returncode == 0, done.stderr
        done = sh([export, upload, load, status])
        assert done.returncode == 0, done.stderr
        assert (run_dir / "README.copy.md").read_bytes() == (ROOT / "README.md").read_bytes()
        assert "authenticated:   yes" in done.stdout
    finally:
        run.proc.send_signal(signal.SIGINT)
        code, out, err = run.finish()
    assert code == 0, err
    assert out.rstrip().endswith("stopped")
    assert password[1] not in (run_dir / "publisher").read_text()
    assert all(gone(pid) for pid in run.pids().values())
    assert set(run.pids()) == {"coffer-upstream", "cofferd"}

    # A second run keeps the users and says nothing of the password.
    again = Run(run_dir)
    try:
        out = again.read_until("Ctrl-C stops both")
        assert "Password" not in out
        export, _, login, *_ = again.commands()
        assert sh([export, login], stdin=password[1] + "\n").returncode == 0
    finally:
        again.proc.send_signal(signal.SIGTERM)
        code, out, err = again.finish()
    assert code == 0, err
    assert password[1] not in out + err
    assert all(gone(pid) for pid in again.pids().values())


def test_when_one_dies_the_other_is_stopped(tmp_path: Path) -> None:
    run = Run(
        tmp_path / "run",
        env={"COFFER_ADMIN_EMAIL": "admin@example.com", "COFFER_ADMIN_PASSWORD": "s3cret-pw"},
    )
    try:
        out = run.read_until("Ctrl-C stops both")
        assert "s3cret-pw" not in out
        assert "First publisher: admin@example.com" in out
        os.kill(run.pids()["cofferd"], signal.SIGKILL)
        code, out, err = run.finish()
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()
    assert code == 1
    assert "cofferd exited with status -9" in err
    assert all(gone(pid) for pid in run.pids().values())
    assert "s3cret-pw" not in out + err
