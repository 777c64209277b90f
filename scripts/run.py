"""``make run``: the reference upstream and cofferd in ``.run/``, until Ctrl-C.

Starts ``coffer-upstream serve`` on a free loopback port with its data in
``.run/upstream`` and, on its first run, a first publisher user: the one named
by ``COFFER_ADMIN_EMAIL`` / ``COFFER_ADMIN_PASSWORD``, or a generated one whose
password is printed once (the upstream keeps only its hash). Then cofferd on
``.run/cofferd.sock`` against it, with its cache and state under ``.run/``,
the upstream's lease key pinned, and ``.run/credentials/`` as its
``$CREDENTIALS_DIRECTORY`` holding a generated device key and identity (and a
``coffer-login`` file if one is put there), as systemd would give them.
Signed releases as in the field (docs/trust.md), set up on the first run: a
root key and a publisher key in ``.run/keys/``, root and targets made with
them (``.run/trust/``) and installed in the upstream, the root pinned in
cofferd, which requires trust. Prints the ``coffer`` commands to try.
Ctrl-C (SIGINT) or SIGTERM stops both, cofferd first, and exits 0; if either
dies on its own, the other is stopped and the exit status is 1.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

from coffer.client import Client, CofferRPCError
from cofferd.field.identity import IDENTITY_CREDENTIAL, DeviceIdentity
from cofferd.trust import keys, owner

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
GENERATED_EMAIL = "publisher@coffer.localhost"
# Never handed to the children: a secret, or systemd's, not theirs.
_KEEP_FROM_CHILDREN = (
    "COFFER_ADMIN_PASSWORD",
    "COFFER_ADMIN_EMAIL",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "COFFER_SOCKET",
    "COFFER_CONFIG",
)


class Stop(Exception):
    """SIGINT or SIGTERM arrived."""


class RunError(Exception):
    """The stack could not start or a part of it died."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stop


def _die_with_parent() -> None:
    # In the child before exec: if this script is killed outright, the
    # kernel sends SIGTERM to the child, so no orphan keeps the port or socket.
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


def shown(path: Path) -> str:
    """``path`` relative to the current directory when under it, else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class Child:
    """A started process, put on ``running`` at once so a signal never misses it."""

    def __init__(
        self,
        running: list[Child],
        name: str,
        command: list[str],
        env: dict[str, str],
        log: Path,
        stdout: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as err, (stdout or Path(os.devnull)).open("wb") as out:
            # A process group of its own: the terminal's Ctrl-C reaches this
            # script only, which then stops the children in order.
            self.proc = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                process_group=0,
                preexec_fn=_die_with_parent,  # safe: this script runs no threads
            )
        # cofferd goes first in the list: it is stopped before the upstream it uses.
        running.insert(0, self)
        print(f"started {name} (pid {self.proc.pid}), log in {shown(log)}", flush=True)

    def died(self) -> int | None:
        return self.proc.poll()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"{self.name} ignored SIGTERM for {STOP_TIMEOUT:g} s: killing it")
                self.proc.kill()
        return self.proc.wait()

    def tail(self, lines: int = 15) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in text)


def child_env(run_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _KEEP_FROM_CHILDREN}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def ensure_publisher(run_dir: Path, data_dir: Path) -> tuple[str, str | None, bool]:
    """(email, password to print or None, created) of the first publisher.

    The email is remembered in ``run_dir/publisher`` (it is no secret); the
    password is not kept anywhere but as the upstream's hash.
    """
    marker = run_dir / "publisher"
    if marker.exists():
        return marker.read_text().strip(), None, False
    email = os.environ.get("COFFER_ADMIN_EMAIL") or GENERATED_EMAIL
    given = os.environ.get("COFFER_ADMIN_PASSWORD")
    password = given or secrets.token_urlsafe(18)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "coffer_upstream",
            "user",
            "add",
            email,
            "--role",
            "publisher",
            "--data-dir",
            str(data_dir),
        ],
        input=password + "\n",
        capture_output=True,
        text=True,
        env=child_env(run_dir, {}),
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RunError(f"could not add the first publisher: {done.stderr.strip()}")
    marker.write_text(email + "\n")
    return email, None if given else password, True


def start_upstream(run_dir: Path, running: list[Child]) -> str:
    out = run_dir / "upstream.out"
    command = [
        sys.executable,
        "-m",
        "coffer_upstream",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--data-dir",
        str(run_dir / "upstream"),
    ]
    # A short lease to try offline expiry by hand: COFFER_RUN_LEASE_SECONDS=60 make run
    if os.environ.get("COFFER_RUN_LEASE_SECONDS"):
        command += ["--lease-seconds", os.environ["COFFER_RUN_LEASE_SECONDS"]]
    env = child_env(run_dir, {})
    child = Child(running, "coffer-upstream", command, env, run_dir / "upstream.log", out)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and child.died() is None:
        first, newline, _ = out.read_text().partition("\n")
        if newline and first.startswith("listening on "):
            return first.removeprefix("listening on ")
        time.sleep(0.05)
    raise RunError(f"coffer-upstream did not start:\n{child.tail()}")


def lease_key(run_dir: Path) -> str:
    """The public key that signs the reference upstream's leases, for cofferd to pin."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "coffer_upstream",
            "lease-key",
            "--data-dir",
            str(run_dir / "upstream"),
        ],
        capture_output=True,
        check=True,
        timeout=START_TIMEOUT,
        env=child_env(run_dir, {}),
    )
    return out.stdout.decode().strip()


def upstream_admin(run_dir: Path, *args: str) -> str:
    """``coffer-upstream ARGS --data-dir .run/upstream``: its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "coffer_upstream", *args, "--data-dir", str(run_dir / "upstream")],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        env=child_env(run_dir, {}),
        check=False,
    )
    if done.returncode != 0:
        raise RunError(f"coffer-upstream {' '.join(args[:2])} failed: {done.stderr.strip()}")
    return done.stdout


def ensure_trust(run_dir: Path) -> Path:
    """The fleet's root (made and installed upstream on the first run); its path.

    As the owner and a publisher would (docs/operations.md): one root key (the
    owner's, here beside the rest: a demo), one publisher key, the upstream's
    online key for snapshot and timestamp.
    """
    trust_dir, key_dir = run_dir / "trust", run_dir / "keys"
    root = trust_dir / "1.root.json"
    if root.exists():
        return root
    for d in (trust_dir, key_dir):
        d.mkdir(mode=0o700, exist_ok=True)
    for name in ("root", "publisher"):
        if not (key_dir / f"{name}.key").exists():
            keys.generate(key_dir / name)
    online = json.loads(upstream_admin(run_dir, "trust", "online-key", "--json"))["key"]
    (key_dir / "online.pub").write_text(json.dumps(online))
    root_bytes, targets_bytes = owner.new_repository(
        [keys.load_signer(key_dir / "root.key")],
        1,
        keys.load_public(key_dir / "online.pub"),
        [keys.load_public(key_dir / "publisher.pub")],
    )
    pending = trust_dir / "1.root.json.pending"
    pending.write_bytes(root_bytes)
    (trust_dir / "1.targets.json").write_bytes(targets_bytes)
    upstream_admin(run_dir, "trust", "root", str(pending))
    upstream_admin(run_dir, "trust", "targets", str(trust_dir / "1.targets.json"))
    pending.rename(root)  # last: its presence says the setup is done
    return root


def pin_root(sock: Path, root: Path) -> None:
    """``coffer trust init`` once: the root cofferd verifies every release against."""
    with Client(sock, timeout=30) as client:
        if client.trust_status().get("root") is None:
            client.trust_init(root.read_text())


def start_cofferd(run_dir: Path, upstream_url: str, running: list[Child]) -> Path:
    sock = run_dir / "cofferd.sock"
    config = run_dir / "cofferd.toml"
    if not config.exists():
        config.write_text("# cofferd settings for `make run` (see systemd/ for the keys)\n")
    for d in ("cache", "state", "credentials"):
        (run_dir / d).mkdir(mode=0o700, exist_ok=True)
    # As systemd would: a credentials dir with a device key, so offline records
    # survive a restart; a coffer-login file put there logs in at start.
    device_key = run_dir / "credentials" / "coffer-device-key"
    if not device_key.exists():
        device_key.write_bytes(os.urandom(32))
        device_key.chmod(0o600)
    # And the device's identity, which coffer-identity.service makes on a device.
    identity = run_dir / "credentials" / IDENTITY_CREDENTIAL
    if not identity.exists():
        identity.write_bytes(DeviceIdentity.generate().pkcs8_pem())
        identity.chmod(0o600)
    env = child_env(
        run_dir,
        {
            "COFFER_CONFIG": str(config),
            "COFFER_UPSTREAM_URL": upstream_url,
            "COFFER_CACHE_DIR": str(run_dir / "cache"),
            "COFFER_STATE_DIR": str(run_dir / "state"),
            "COFFER_ARCHIVE_PATH": str(run_dir / "state" / "images.coffer"),
            "COFFER_LEASE_PUBLIC_KEYS": lease_key(run_dir),
            "CREDENTIALS_DIRECTORY": str(run_dir / "credentials"),
            "COFFER_TRUST": "required",
        },
    )
    command = [sys.executable, "-m", "cofferd", "--socket", str(sock)]
    child = Child(running, "cofferd", command, env, run_dir / "cofferd.log")
    deadline = time.monotonic() + START_TIMEOUT
    with Client(sock, timeout=5) as client:
        while time.monotonic() < deadline and child.died() is None:
            try:
                client.health()
            except CofferRPCError:
                time.sleep(0.05)
            else:
                return sock
    raise RunError(f"cofferd did not start:\n{child.tail()}")


def banner(
    upstream_url: str, sock: Path, email: str, password: str | None, created: bool, run_dir: Path
) -> str:
    coffer = Path(sys.executable).parent / "coffer"
    cmd = shown(coffer) if coffer.exists() else "coffer"
    readme = shown(ROOT / "README.md")
    lines = [
        "",
        f"coffer is up: the reference upstream at {upstream_url}, cofferd on {shown(sock)}",
    ]
    if password is not None:
        lines += [
            f"First publisher: {email}",
            f"Password: {password}",
            "(shown this once: the upstream keeps only its hash)",
        ]
    elif created:
        lines.append(f"First publisher: {email}, with the password from COFFER_ADMIN_PASSWORD")
    else:
        lines.append(f"Publisher: {email}, with the password given when {shown(run_dir)} was made")
    lines += [
        "",
        "Try, in another shell from this directory:",
        f"  export COFFER_SOCKET={sock}",
        f"  {cmd} health",
        f"  {cmd} login --email {email}",
        f"  {cmd} upload {readme} --sign-key {shown(run_dir / 'keys' / 'publisher.key')}",
        f"  {cmd} load README.md -o {shown(run_dir / 'README.copy.md')}",
        f"  {cmd} status",
        "",
        f"Start afresh: stop, then remove {shown(run_dir)}. Ctrl-C stops both.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run-dir",
        type=Path,
        default=ROOT / ".run",
        help="where everything lives (default: .run/ in the working tree)",
    )
    args = parser.parse_args(argv)
    run_dir: Path = args.run_dir.resolve()
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    children: list[Child] = []
    try:
        run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        email, password, created = ensure_publisher(run_dir, run_dir / "upstream")
        url = start_upstream(run_dir, children)
        root = ensure_trust(run_dir)
        sock = start_cofferd(run_dir, url, children)
        pin_root(sock, root)
        print(banner(url, sock, email, password, created, run_dir), flush=True)
        watch(children)
    except Stop:
        print("\nstopping", flush=True)
        return stop_all(children)
    except RunError as exc:
        print(f"coffer run: {exc}", file=sys.stderr, flush=True)
        stop_all(children)
        return 1


def watch(children: list[Child]) -> NoReturn:
    """Return never: raise Stop on a signal, RunError when a child dies."""
    while True:
        for child in children:
            if (code := child.died()) is not None:
                raise RunError(f"{child.name} exited with status {code}:\n{child.tail()}")
        time.sleep(0.2)


def stop_all(children: list[Child]) -> int:
    """SIGTERM each in turn; 0 if every one exited 0. Further Ctrl-Cs wait for this."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    bad = [f"{c.name} exited with {code}" for c in children if (code := c.stop()) != 0]
    if bad:
        print("coffer run: " + "; ".join(bad), file=sys.stderr)
        return 1
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
