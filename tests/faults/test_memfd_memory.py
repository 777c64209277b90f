"""Another uid's memfds cannot get cofferd OOM-killed: their pages are the caller's.

cofferd runs in a memory cgroup of its own, with a limit well below what a
caller of another uid (nobody) then holds in memfds filled by ``load_memfd``:
three times that limit. The caller makes and allocates each memfd itself, so
its pages are charged to the caller's group; cofferd's stays under its
limit, nothing is OOM-killed, and cofferd still answers. Before, cofferd made
the memfds and the pages were charged to it: the same calls got it
OOM-killed, again after each restart while the caller held them.

The group is made by hand under a writable memory controller: cgroup v2's
unified hierarchy (``memory.max``) where there is one, else cgroup v1's
memory hierarchy (``memory.limit_in_bytes``), which this project's machines
have. Neither writable is a failure, not a skip: the claim is then untested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faults.conftest import Stack, figure

MiB = 1 << 20
#: cofferd's memory limit; the caller holds three times this in memfds.
LIMIT = 192 * MiB
RESOURCE = 96 * MiB
COPIES = 6
NOBODY = 65534
_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

pytestmark = [pytest.mark.root, pytest.mark.slow]


@dataclass(frozen=True)
class MemoryGroup:
    """One memory cgroup made for the test, v2 or v1: the files differ, the claim not."""

    path: Path
    root: Path
    v2: bool

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def current(self) -> int:
        name = "memory.current" if self.v2 else "memory.usage_in_bytes"
        return int((self.path / name).read_text())

    def oom_events(self) -> dict[str, str]:
        """``oom`` and ``oom_kill``: v2's counts; v1's ``under_oom`` flag and ``oom_kill`` count."""
        if self.v2:
            text = (self.path / "memory.events").read_text()
            return dict(line.split() for line in text.splitlines())
        control = dict(
            line.split() for line in (self.path / "memory.oom_control").read_text().splitlines()
        )
        return {
            "oom": control["under_oom"],
            "oom_kill": control.get("oom_kill", "0"),
        }


def _memory_root() -> tuple[Path, bool]:
    unified = Path("/sys/fs/cgroup")
    controllers = unified / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return unified, True
    legacy = unified / "memory"
    if (legacy / "memory.limit_in_bytes").exists():
        return legacy, False
    pytest.fail("no memory cgroup controller (v2 or v1) under /sys/fs/cgroup", pytrace=False)


#: The other uid's program: stat, make and allocate the memfd, load into it, keep it.
_HOLDER = """
import json, os, socket, sys
path, name, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])

def call(method, params, fds=()):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(120)
    s.connect(path)
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    socket.send_fds(s, [line.encode() + b"\\n"], list(fds))
    buf = b""
    while not buf.endswith(b"\\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf)

held = []
size = call("stat", {"filename": name})["result"]["size"]
for _ in range(copies):
    fd = os.memfd_create("held", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    os.posix_fallocate(fd, 0, size)
    answer = call("load_memfd", {"filename": name}, [fd])
    held.append(fd)
    print(json.dumps(answer.get("error") or {"ok": True}), flush=True)
print("holding", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def group() -> Iterator[MemoryGroup]:
    root, v2 = _memory_root()
    path = root / f"coffer-test-{os.getpid()}"
    try:
        path.mkdir()
    except OSError as exc:
        pytest.fail(f"cannot make a memory cgroup under {root}: {exc}", pytrace=False)
    try:
        if v2:
            (path / "memory.max").write_text(str(LIMIT))
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")
        else:
            (path / "memory.limit_in_bytes").write_text(str(LIMIT))
            if (path / "memory.memsw.limit_in_bytes").exists():
                (path / "memory.memsw.limit_in_bytes").write_text(str(LIMIT))
        yield MemoryGroup(path, root, v2)
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            (root / "cgroup.procs").write_text(pid)
        path.rmdir()


def test_other_uids_memfds_are_charged_to_them(
    stack: Callable[..., Stack], group: MemoryGroup
) -> None:
    s = stack(COFFER_MEMFD_MAX_BYTES=str(2 * RESOURCE))
    s.login()
    assert s.upload("m.bin", os.urandom(RESOURCE))["result"]["version"] == 1
    group.add(s.daemon.pid)
    for d in (s.daemon.base.parent, s.daemon.base):
        os.chmod(d, 0o711)  # noqa: S103 - traversable, still not listable
    holder = subprocess.Popen(
        [_PYTHON, "-I", "-S", "-c", _HOLDER, str(s.daemon.socket_path), "m.bin", str(COPIES)],
        user=NOBODY,
        group=0,
        extra_groups=[0],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert holder.stdout is not None
        answers = [json.loads(holder.stdout.readline()) for _ in range(COPIES)]
        assert holder.stdout.readline().strip() == "holding"
        assert answers == [{"ok": True}] * COPIES, answers
        current = group.current()
        figure(
            "cofferd's memory.current while another uid holds 3 x its limit", current / MiB, "MiB"
        )
        events = group.oom_events()
        # The pages held are 3 x the limit: charged here, they would not fit.
        assert events["oom_kill"] == "0", events
        assert events["oom"] == "0", events
        assert s.daemon.proc.poll() is None, "cofferd was killed"
        assert s.daemon.call("health")["result"]["status"] == "ok"
    finally:
        if holder.stdin is not None:
            holder.stdin.close()
        holder.wait(30)
        if holder.stdout is not None:
            holder.stdout.close()
    time.sleep(0.1)
    assert s.daemon.proc.poll() is None
