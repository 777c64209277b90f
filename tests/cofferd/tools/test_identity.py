"""``python -m cofferd.tools.identity`` with a stand-in ``systemd-creds``.

The stand-in seals by wrapping the plaintext with the name and a "machine"
(``FAKE_MACHINE``): it opens only on the same machine and under the same
name, as the real one opens only with the same host key and TPM. It logs its
argv, so a test sees that no secret is ever on a command line. The real
``systemd-creds`` (host key, decrypt refusals) is exercised in the systemd
container (tests/packaging/test_identity.py).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cofferd.field.identity import read_state

FAKE = """#!/usr/bin/env python3
import base64, json, os, sys
with open(os.environ["LOG_DIR"] + "/argv", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if os.environ.get("FAKE_FAIL"):
    sys.exit("Failed to find a TPM2 device")
verb, name = sys.argv[1], sys.argv[2].removeprefix("--name=")
machine = os.environ["FAKE_MACHINE"]
if verb == "encrypt":
    data = sys.stdin.buffer.read()
    sealed = {"m": machine, "n": name, "d": base64.b64encode(data[::-1]).decode()}
    with open(sys.argv[4], "w") as f:
        json.dump(sealed, f)
elif verb == "decrypt":
    sealed = json.load(open(sys.argv[3]))
    if sealed["m"] != machine:
        sys.exit("Failed to decrypt the credential: Bad message")
    if sealed["n"] != name:
        sys.exit("Embedded credential name does not match")
    sys.stdout.buffer.write(base64.b64decode(sealed["d"])[::-1])
"""


class Device:
    def __init__(self, tmp: Path, machine: str) -> None:
        self.tmp = tmp
        self.machine = machine
        self.dir = tmp / "identity"
        self.legacy = tmp / "etc-coffer" / "device-key.cred"
        self.fake = tmp / "systemd-creds"
        self.fake.write_text(FAKE)
        self.fake.chmod(0o755)

    def run(self, *, fail: bool = False) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "LOG_DIR": str(self.tmp), "FAKE_MACHINE": self.machine}
        if fail:
            env["FAKE_FAIL"] = "1"
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "cofferd.tools.identity",
                f"--dir={self.dir}",
                f"--legacy-device-key={self.legacy}",
                f"--systemd-creds={self.fake}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def decrypt(self, name: str, file: str) -> bytes:
        env = {**os.environ, "LOG_DIR": str(self.tmp), "FAKE_MACHINE": self.machine}
        return subprocess.run(
            [str(self.fake), "decrypt", f"--name={name}", str(self.dir / file), "-"],
            env=env,
            capture_output=True,
            check=True,
        ).stdout

    def state(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.dir / "state.json").read_text())
        return loaded

    def files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.dir.iterdir())}


def test_first_boot_makes_both_then_keeps_them(tmp_path: Path) -> None:
    device = Device(tmp_path, "machine-a")
    first = device.run()
    assert first.returncode == 0, first.stderr
    assert sorted(device.files()) == ["device-identity.cred", "device-key.cred", "state.json"]
    assert stat.S_IMODE(device.dir.stat().st_mode) == 0o700
    for path in device.dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    pem = device.decrypt("coffer-device-identity", "device-identity.cred")
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert len(device.decrypt("coffer-device-key", "device-key.cred")) == 32
    state = device.state()
    assert state["replaced"] is False
    assert state["key_id"] in first.stdout
    # Secrets go by pipe: never on a command line, never in the journal.
    argv = (tmp_path / "argv").read_text()
    assert "PRIVATE" not in argv
    assert "PRIVATE" not in first.stdout + first.stderr

    before = device.files()
    again = device.run()
    assert again.returncode == 0, again.stderr
    assert device.files() == before


def test_a_credential_from_another_machine_is_replaced_by_a_new_identity(tmp_path: Path) -> None:
    image = Device(tmp_path, "image-builder")
    assert image.run().returncode == 0
    old = image.state()
    old_key = image.files()["device-key.cred"]

    device = Device(tmp_path, "device-17")  # the same files, booted elsewhere
    booted = device.run()
    assert booted.returncode == 0, booted.stderr
    assert "could not be decrypted on this machine" in booted.stdout
    assert "new identity: enroll again" in booted.stdout
    state = device.state()
    assert state["key_id"] != old["key_id"]
    assert state["replaced"] is True
    assert state["reason"] == "the previous identity could not be decrypted on this machine"
    # Both open here now; the records key is new, so old records stay shut.
    device.decrypt("coffer-device-identity", "device-identity.cred")
    assert device.files()["device-key.cred"] != old_key
    assert len(device.decrypt("coffer-device-key", "device-key.cred")) == 32
    # What cofferd reads from the state credential.
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "coffer-identity-state").write_bytes(device.files()["state.json"])
    assert read_state(creds, str(state["key_id"]))[0] is True
    assert read_state(creds, str(old["key_id"]))[0] is False
    # The next boot keeps the new identity, still marked new until enrolled.
    assert device.run().returncode == 0
    assert device.state() == state


def test_a_records_key_that_does_not_open_is_replaced_alone(tmp_path: Path) -> None:
    device = Device(tmp_path, "machine-a")
    assert device.run().returncode == 0
    kept = device.files()["device-identity.cred"]
    (device.dir / "device-key.cred").write_text('{"m": "elsewhere", "n": "x", "d": ""}')
    out = device.run()
    assert out.returncode == 0, out.stderr
    assert "records key does not open here" in out.stdout
    assert device.files()["device-identity.cred"] == kept
    assert device.state()["replaced"] is False
    assert len(device.decrypt("coffer-device-key", "device-key.cred")) == 32


@pytest.mark.parametrize("same_machine", [True, False])
def test_an_older_packages_records_key_is_moved_if_it_opens(
    tmp_path: Path, same_machine: bool
) -> None:
    device = Device(tmp_path, "machine-a")
    device.legacy.parent.mkdir()
    env = {**os.environ, "LOG_DIR": str(tmp_path)}
    env["FAKE_MACHINE"] = "machine-a" if same_machine else "other"
    subprocess.run(
        [str(device.fake), "encrypt", "--name=coffer-device-key", "-", str(device.legacy)],
        input=b"k" * 32,
        env=env,
        check=True,
    )
    out = device.run()
    assert out.returncode == 0, out.stderr
    assert not device.legacy.exists()
    key = device.decrypt("coffer-device-key", "device-key.cred")
    assert (key == b"k" * 32) is same_machine


def test_a_failing_systemd_creds_leaves_nothing_half_made(tmp_path: Path) -> None:
    device = Device(tmp_path, "machine-a")
    out = device.run(fail=True)
    assert out.returncode == 1
    assert "systemd-creds encrypt --name=coffer-device-identity failed" in out.stderr
    assert "Failed to find a TPM2 device" in out.stderr
    assert device.files() == {}
