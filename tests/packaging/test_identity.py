"""Every device its own secrets: two devices booted from one golden image.

The image is what an image builder makes: the Debian root with the .deb
installed by dpkg while no systemd runs (as in a chroot), committed as it is;
nothing has booted in it, so it holds no identity, no records key and no
systemd host key. Two containers start from it, each boots, and
coffer-identity.service makes each its own identity and records key with the
real systemd-creds (the host key each makes on first use; these containers
have no TPM2). Then: a copy of device 1's state opens nothing on device 2,
and device 1's credentials copied onto device 2 are replaced at the next boot
by a new identity, with cofferd still starting and saying so.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.dockerd import PrivateDockerd
from fixtures.systemd import (
    SystemdContainer,
    Transcript,
    fleet_root,
    upstream_command,
    upstream_wrapper,
)

pytestmark = [pytest.mark.systemd, pytest.mark.slow]

EMAIL = "publisher@example.org"
PASSWORD = "correct-horse-battery"  # a test account's; passed on stdin only
PORT = 8097
#: The publisher's key, made on the host of the upstream, which publishes.
PUBLISHER_KEY = "/root/publisher.key"
OFFLINE_REFUSED = 10  # coffer's exit code
REPO = Path(__file__).resolve().parents[2]
IDENTITY_DIR = "/var/lib/coffer-identity"

#: Run in a device: the public key of the identity credential, opened by systemd-creds.
PUBLIC_KEY_OF_CRED = f"""
import base64, subprocess
from cryptography.hazmat.primitives import serialization
pem = subprocess.run(
    ["systemd-creds", "decrypt", "--name=coffer-device-identity",
     "{IDENTITY_DIR}/device-identity.cred", "-"],
    capture_output=True, check=True,
).stdout
key = serialization.load_pem_private_key(pem, password=None)
raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
print(base64.b64encode(raw).decode())
"""


@pytest.fixture(scope="module")
def golden_image(
    systemd_engine: PrivateDockerd, systemd_image: str, coffer_deb: Path
) -> Iterator[str]:
    """The Debian root with the .deb installed and never booted, as one image."""
    builder = f"coffer-golden-{os.getpid()}"
    tag = f"coffer-test/golden-{os.getpid()}:latest"
    install = (
        "dpkg -i /tmp/coffer.deb && rm /tmp/coffer.deb"
        # What the image must not carry: any device secret.
        f' && test -z "$(ls -A {IDENTITY_DIR} 2>/dev/null)"'
        " && test ! -e /var/lib/systemd/credential.secret"
        " && test ! -e /etc/coffer/device-key.cred"
    )
    systemd_engine.docker(
        "create", "--name", builder, "--network", "none", systemd_image, "sh", "-c", install
    )
    try:
        systemd_engine.docker("cp", str(coffer_deb), f"{builder}:/tmp/coffer.deb")
        built = systemd_engine.docker("start", "-a", builder, check=False, timeout=600)
        assert built.returncode == 0, (built.stdout + built.stderr).decode(errors="replace")
        systemd_engine.docker("commit", builder, tag)
    finally:
        systemd_engine.docker("rm", "-f", builder, check=False)
    try:
        yield tag
    finally:
        systemd_engine.docker("rmi", "-f", tag, check=False)


@pytest.fixture(scope="module")
def devices(
    systemd_engine: PrivateDockerd, golden_image: str
) -> Iterator[tuple[SystemdContainer, SystemdContainer]]:
    boxes = tuple(
        SystemdContainer(systemd_engine, golden_image, f"coffer-dev{n}-{os.getpid()}")
        for n in (1, 2)
    )
    try:
        for box in boxes:
            box.boot()
        yield boxes[0], boxes[1]
    finally:
        for box in boxes:
            box.remove()


def identity_of(device: SystemdContainer) -> dict[str, Any]:
    status = json.loads(device.run("coffer", "--json", "status").stdout)
    identity: dict[str, Any] = status["identity"]
    return identity


def no_secret_in_journals(device: SystemdContainer) -> None:
    for unit in ("coffer-identity.service", "cofferd.service"):
        journal = device.journal(unit, lines=500)
        assert "PRIVATE KEY" not in journal
        assert PASSWORD not in journal


def test_each_device_makes_its_own_identity_at_first_boot(
    devices: tuple[SystemdContainer, SystemdContainer],
) -> None:
    seen = []
    for device in devices:
        # Made at boot (cofferd.socket wants it), before any call.
        made = device.wait_for("coffer-identity.service", ActiveState="active", Result="success")
        assert made["Result"] == "success"
        assert device.show("cofferd.service", "ActiveState")["ActiveState"] == "inactive"
        files = device.run(
            "stat",
            "-c",
            "%n %U %a",
            IDENTITY_DIR,
            *(
                f"{IDENTITY_DIR}/{f}"
                for f in ("device-identity.cred", "device-key.cred", "state.json")
            ),
        ).stdout.splitlines()
        assert files == [
            f"{IDENTITY_DIR} root 700",
            f"{IDENTITY_DIR}/device-identity.cred root 600",
            f"{IDENTITY_DIR}/device-key.cred root 600",
            f"{IDENTITY_DIR}/state.json root 600",
        ]
        identity = identity_of(device)  # the call starts cofferd
        device.wait_for("cofferd.service", ActiveState="active", SubState="running")
        assert identity["new"] is False
        assert identity["enrolled"] is False
        # What cofferd shows is the key sealed on this device.
        sealed = device.run("/opt/coffer/bin/python", "-c", PUBLIC_KEY_OF_CRED).stdout.strip()
        assert identity["public_key"] == sealed
        made_line = f"made the device identity {identity['key_id']}"
        assert made_line in device.journal("coffer-identity.service")
        no_secret_in_journals(device)
        seen.append(identity["public_key"])
        print(f"{device.name}: identity {identity['key_id']} {identity['public_key']}")
    assert seen[0] != seen[1]
    # Each made its own host key too: the image had none.
    secrets = [d.run("sha256sum", "/var/lib/systemd/credential.secret").stdout for d in devices]
    assert secrets[0].split()[0] != secrets[1].split()[0]


def _set_upstream(device: SystemdContainer, lease_key: str, port: int = PORT) -> None:
    dropin = "/etc/systemd/system/cofferd.service.d/test-upstream.conf"
    device.run("mkdir", "-p", str(Path(dropin).parent))
    device.run(
        "sh",
        "-c",
        f"printf '[Service]\\nEnvironment=COFFER_UPSTREAM_URL=http://127.0.0.1:{port}\\n"
        f"Environment=COFFER_LEASE_PUBLIC_KEYS={lease_key}\\n' > {dropin}",
    )
    device.run(
        *("coffer", "credentials", "set-login", "--email", EMAIL, "--password-stdin"),
        "--no-restart",
        input=PASSWORD + "\n",
    )
    device.run("systemctl", "daemon-reload")
    device.run("systemctl", "restart", "cofferd.service")


def test_device_1s_offline_records_open_nothing_on_device_2(
    devices: tuple[SystemdContainer, SystemdContainer],
    upstream_site: Path,
) -> None:
    one, two = devices
    log = Transcript()
    upstream = upstream_command(one, upstream_site)
    upstream_wrapper(one, upstream_site)
    data = "--data-dir=/srv/upstream"
    one.run(*upstream, "user", "add", EMAIL, "--role=publisher", data, input=PASSWORD + "\n")
    lease_key = one.run(*upstream, "lease-key", data).stdout.strip()
    log.sh(one, f"coffer keys generate {PUBLISHER_KEY.removesuffix('.key')}")
    root = fleet_root(one, log, "/srv/upstream", PUBLISHER_KEY[:-4] + ".pub")
    one.run(
        *("systemd-run", "--unit=id-upstream", *upstream, "serve"),
        *("--host=127.0.0.1", f"--port={PORT}", data),
    )
    one.wait_for("id-upstream.service", ActiveState="active")
    _set_upstream(one, lease_key)
    log.sh(one, f"coffer trust init {root}")
    log.sh(
        one,
        "head -c 200000 /dev/urandom > /root/field.bin"
        f" && coffer upload /root/field.bin --sign-key {PUBLISHER_KEY}"
        " && coffer load field.bin -o /root/online.bin && cmp /root/field.bin /root/online.bin",
    )
    # Device 1 serves it offline from its record: the record is good.
    one.run("systemctl", "stop", "id-upstream.service")
    one.run("systemctl", "restart", "cofferd.service")
    one.run("sh", "-c", "coffer load field.bin -o /root/offline.bin")
    one.run("cmp", "/root/field.bin", "/root/offline.bin")

    # Its state and cache, copied onto device 2 (same owner ids: one image).
    for device in devices:
        device.run("systemctl", "stop", "cofferd.service")
    copied = one.engine.docker(
        "exec",
        one.name,
        "tar",
        "-C",
        "/",
        "--numeric-owner",
        "-cf",
        "-",
        "var/lib/coffer",
        "var/cache/coffer",
    ).stdout
    two.run("sh", "-c", "rm -rf /var/lib/coffer/* /var/cache/coffer/*")
    two.engine.docker(
        "exec", "-i", two.name, "tar", "-C", "/", "--numeric-owner", "-xpf", "-", input=copied
    )
    _set_upstream(two, lease_key)  # the same pinned key; its upstream is unreachable
    refused = two.run("sh", "-c", "coffer load field.bin -o /root/stolen.bin", check=False)
    assert refused.returncode == OFFLINE_REFUSED, refused
    assert "does not open with this device's key" in refused.stderr
    assert two.run("sh", "-c", "cat /root/stolen.bin 2>/dev/null | wc -c").stdout.strip() == "0"
    assert "does not open with this device's key" in two.journal("cofferd.service")
    for device in devices:
        no_secret_in_journals(device)
    print(log)


def test_credentials_from_another_machine_are_replaced_at_boot(
    devices: tuple[SystemdContainer, SystemdContainer],
) -> None:
    one, two = devices
    before = {identity_of(d)["key_id"] for d in devices}
    copied = one.engine.docker(
        "exec", one.name, "tar", "-C", "/", "-cf", "-", IDENTITY_DIR.lstrip("/")
    ).stdout
    two.engine.docker("exec", "-i", two.name, "tar", "-C", "/", "-xpf", "-", input=copied)
    two.reboot()

    made = two.wait_for("coffer-identity.service", ActiveState="active", Result="success")
    assert made["Result"] == "success"
    journal = two.journal("coffer-identity.service")
    assert "could not be decrypted on this machine" in journal
    assert "new identity: enroll again" in journal
    # At warning priority, as the docs tell operators to look for it.
    warnings = two.run(
        "journalctl", "-u", "coffer-identity", "-b", "-p", "warning", "-o", "cat", "--no-pager"
    ).stdout
    assert "new identity: enroll again" in warnings
    identity = identity_of(two)
    two.wait_for("cofferd.service", ActiveState="active", SubState="running")
    assert identity["new"] is True
    assert identity["key_id"] not in before
    sealed = two.run("/opt/coffer/bin/python", "-c", PUBLIC_KEY_OF_CRED).stdout.strip()
    assert identity["public_key"] == sealed
    shown = two.run("coffer", "status").stdout
    assert f"identity:        {identity['key_id']} (new identity: enroll again)" in shown
    print(shown)
    no_secret_in_journals(two)


# --- Enrollment, login by proof of key and revocation: two devices, one upstream ---

UP_PORT = 8098
UP_URL = f"http://127.0.0.1:{UP_PORT}"
UP_DATA = "--data-dir=/srv/upstream"
RESOURCE = "fleet.bin"
UNAUTHORIZED = 4  # coffer's exit code for 401/403
UNTRUSTED = 11  # coffer's exit code for 422 Untrusted
#: The fleet's root as the image builder ships it; each device's operator pins it.
FLEET_ROOT = "/etc/coffer/fleet-root.json"
DATABASE = "/srv/upstream/upstream.sqlite3"
WAIT_UP = (
    "import socket, time\n"
    "deadline = time.monotonic() + 60\n"
    "while True:\n"
    "    try:\n"
    f"        socket.create_connection(('127.0.0.1', {UP_PORT}), 1).close(); break\n"
    "    except OSError:\n"
    "        if time.monotonic() > deadline: raise\n"
    "        time.sleep(0.2)\n"
)


class Fleet:
    """The upstream's host and two devices sharing its loopback, from one image."""

    def __init__(
        self,
        host: SystemdContainer,
        upstream: list[str],
        token: str,
        devices: tuple[SystemdContainer, SystemdContainer],
        log: Transcript,
    ) -> None:
        self.host = host
        self.upstream = upstream
        self.token = token
        self.devices = devices
        self.log = log

    def admin(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``coffer-upstream ARGV`` on the upstream's host, logged in the transcript."""
        return self.log.sh(self.host, shlex.join(["coffer-upstream", *argv, UP_DATA]), check=check)

    def on(self, device: SystemdContainer, *argv: str, check: bool = True) -> str:
        """Run ``argv`` on ``device``; its output goes into the transcript."""
        done = self.log.sh(device, shlex.join(argv), check=check)
        return done.stdout + done.stderr


def _enrolled(device: SystemdContainer, timeout: float = 90.0) -> dict[str, Any]:
    """The device's identity once cofferd (started by the call) has enrolled from the credential."""
    deadline = time.monotonic() + timeout
    while True:
        identity = identity_of(device)
        if identity.get("enrolled") and identity.get("device_id"):
            return identity
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{device.name} did not enroll in {timeout:.0f} s: {identity}\n"
                f"{device.journal('cofferd.service')}"
            )
        time.sleep(0.5)


@pytest.fixture(scope="module")
def fleet(
    systemd_engine: PrivateDockerd,
    golden_image: str,
    upstream_site: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Fleet]:
    """The upstream in one container; two devices from one image carrying a token.

    The private dockerd has no bridge (``--bridge=none``), so the devices join
    the upstream host's network namespace (``--network container:``): one
    loopback, one upstream process, three separate systems otherwise.
    """
    pid = os.getpid()
    host = SystemdContainer(systemd_engine, golden_image, f"coffer-uphost-{pid}")
    boxes: list[SystemdContainer] = []
    image = f"coffer-test/enroll-{pid}:latest"
    builder = f"coffer-enroll-{pid}"
    log = Transcript()
    try:
        host.boot()
        upstream = upstream_command(host, upstream_site)
        upstream_wrapper(host, upstream_site)
        host.run(
            *upstream, "user", "add", EMAIL, "--role=publisher", UP_DATA, input=PASSWORD + "\n"
        )
        lease_key = host.run(*upstream, "lease-key", UP_DATA).stdout.strip()
        # Trust as the package requires it: the publisher's key, and the
        # owner's root and targets delegating to it, made with the packaged
        # tools and installed in the upstream.
        log.sh(host, f"coffer keys generate {PUBLISHER_KEY.removesuffix('.key')}")
        root = fleet_root(host, log, UP_DATA.split("=", 1)[1], PUBLISHER_KEY[:-4] + ".pub")
        _serve_upstream(host, upstream)
        # The publisher's resource, signed, uploaded through the host's own cofferd.
        _set_upstream(host, lease_key, UP_PORT)
        log.sh(host, f"coffer trust init {root}")
        log.sh(
            host,
            f"head -c 300000 /dev/urandom > /root/{RESOURCE}"
            f" && coffer upload /root/{RESOURCE} --sign-key {PUBLISHER_KEY}",
        )
        made = host.run(
            *upstream,
            *("enroll-token", "create", "--uses", "2", "--expires", "1h", "--role", "reader"),
            *("--json", UP_DATA),
        )
        token = json.loads(made.stdout)["token"]
        assert token.startswith("cet_")

        # The image builder's layer: the token as a credential, the upstream and its lease key.
        files = tmp_path_factory.mktemp("enroll-image")
        (files / "enroll-token").write_text(token + "\n")
        systemd_engine.docker("cp", f"{host.name}:{root}", str(files / "fleet-root.json"))
        dropins = files / "cofferd.service.d"
        dropins.mkdir()
        (dropins / "enroll.conf").write_text(
            "[Service]\nLoadCredential=coffer-enroll-token:/etc/coffer/enroll-token\n"
        )
        # A refresh of the trust metadata at every load (default: at most one
        # a minute), so that each step below sees what the upstream serves now.
        (dropins / "upstream.conf").write_text(
            f"[Service]\nEnvironment=COFFER_UPSTREAM_URL={UP_URL}\n"
            f"Environment=COFFER_LEASE_PUBLIC_KEYS={lease_key}\n"
            "Environment=COFFER_TRUST_REFRESH_INTERVAL=0\n"
        )
        systemd_engine.docker(
            *("create", "--name", builder, "--network", "none", golden_image),
            "sh",
            "-c",
            "chown -R root:root /etc/coffer/enroll-token /etc/systemd/system/cofferd.service.d"
            f" {FLEET_ROOT} && chmod 0600 /etc/coffer/enroll-token && chmod 0644 {FLEET_ROOT}",
        )
        systemd_engine.docker(
            "cp", str(files / "enroll-token"), f"{builder}:/etc/coffer/enroll-token"
        )
        systemd_engine.docker(
            "cp", str(dropins), f"{builder}:/etc/systemd/system/cofferd.service.d"
        )
        systemd_engine.docker("cp", str(files / "fleet-root.json"), f"{builder}:{FLEET_ROOT}")
        built = systemd_engine.docker("start", "-a", builder, check=False, timeout=120)
        assert built.returncode == 0, (built.stdout + built.stderr).decode(errors="replace")
        systemd_engine.docker("commit", builder, image)

        for n in (1, 2):
            box = SystemdContainer(
                systemd_engine, image, f"coffer-fleet{n}-{pid}", network=f"container:{host.name}"
            )
            boxes.append(box)
            box.boot()
            # The operator pins the fleet's root (the package ships none).
            log.sh(box, f"coffer trust init {FLEET_ROOT}")
        yield Fleet(host, upstream, token, (boxes[0], boxes[1]), log)
    finally:
        for box in [*boxes, host]:
            box.remove()
        systemd_engine.docker("rm", "-f", builder, check=False)
        systemd_engine.docker("rmi", "-f", image, check=False)


def _serve_upstream(host: SystemdContainer, upstream: list[str]) -> None:
    host.run("systemctl", "reset-failed", "fleet-upstream.service", check=False)
    host.run(
        *("systemd-run", "--unit=fleet-upstream", *upstream, "serve"),
        *("--host=127.0.0.1", f"--port={UP_PORT}", UP_DATA),
    )
    host.run("/opt/coffer/bin/python", "-c", WAIT_UP)


def _no_secret_anywhere(fleet: Fleet) -> None:
    for device in fleet.devices:
        no_secret_in_journals(device)
        for unit in ("coffer-identity.service", "cofferd.service"):
            journal = device.journal(unit, lines=2000)
            assert fleet.token not in journal
            assert "cet_" not in journal
            assert "eyJ" not in journal  # no JWT: no assertion, no access token
            assert "PRIVATE KEY" not in journal
    upstream_log = fleet.host.journal("fleet-upstream.service", lines=5000)
    assert fleet.token not in upstream_log
    assert "eyJ" not in upstream_log


def test_two_devices_enroll_unattended_load_and_one_is_revoked(fleet: Fleet) -> None:
    one, two = fleet.devices
    source = fleet.host.run("sha256sum", f"/root/{RESOURCE}").stdout.split()[0]

    # Each boots, makes its own key and enrolls with the image's token, unattended.
    identities = [_enrolled(device) for device in fleet.devices]
    for device in fleet.devices:
        fleet.on(device, "coffer", "status")
    ids = [i["device_id"] for i in identities]
    keys = [i["public_key"] for i in identities]
    assert ids[0] != ids[1]
    assert keys[0] != keys[1]
    listed = json.loads(fleet.admin("device", "ls", "--json").stdout)
    fleet.admin("device", "ls")
    assert sorted((d["id"], d["public_key"]) for d in listed) == sorted(zip(ids, keys, strict=True))
    assert all(d["role"] == "reader" and d["revoked_at"] is None for d in listed)
    for device in fleet.devices:
        enrolled = [
            line
            for line in device.journal("cofferd.service", lines=500).splitlines()
            if "enrolled from credential coffer-enroll-token as device" in line
        ]
        assert len(enrolled) == 1
        fleet.log.entries.append(
            f"root@{device.name}# journalctl -u cofferd | grep enrolled\n{enrolled[0]}\n"
        )

    # Each loads the resource by proof of key: no password on either device.
    for device in fleet.devices:
        assert device.run("test", "-e", "/etc/coffer/login.cred", check=False).returncode != 0
        fleet.on(device, "coffer", "load", RESOURCE, "-o", f"/root/{RESOURCE}")
        assert device.run("sha256sum", f"/root/{RESOURCE}").stdout.split()[0] == source
    assert json.loads(one.run("coffer", "--json", "status").stdout)["field"]["records"]

    # The image's token is spent (2 uses, 2 devices): a third device is refused.
    spent = fleet.log.sh(fleet.host, "coffer enroll", input=fleet.token + "\n", check=False)
    assert spent.returncode == UNAUTHORIZED, spent
    assert "unknown, spent or expired" in spent.stderr
    assert fleet.token not in spent.stdout + spent.stderr

    # Revoking device 1 stops it at its next exchange; device 2 is untouched.
    fleet.admin("device", "revoke", ids[0])
    refused = fleet.log.sh(one, f"coffer load {RESOURCE} -o /root/after.bin", check=False)
    assert refused.returncode == UNAUTHORIZED, refused
    assert "device revoked" in refused.stderr
    assert one.run("sh", "-c", "cat /root/after.bin 2>/dev/null | wc -c").stdout.strip() == "0"
    fleet.on(one, "coffer", "status")
    assert not json.loads(one.run("coffer", "--json", "status").stdout)["field"]["records"]

    fleet.on(two, "coffer", "load", RESOURCE, "-o", "/root/again.bin")
    assert two.run("sha256sum", "/root/again.bin").stdout.split()[0] == source
    fleet.on(two, "coffer", "status")
    listed = json.loads(fleet.admin("device", "ls", "--json").stdout)
    fleet.admin("device", "ls")
    assert {d["id"]: d["revoked_at"] is not None for d in listed} == {ids[0]: True, ids[1]: False}

    _no_secret_anywhere(fleet)
    print("\n" + str(fleet.log))


#: Run on the upstream's host: a consistent copy of its SQLite database (argv: from, to).
BACKUP = """
import sqlite3, sys
src, dst = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
src.backup(dst)
dst.close()
"""


def _sha256(box: SystemdContainer, path: str) -> str:
    return box.run("sha256sum", path).stdout.split()[0]


def _rpc_rule(fleet: Fleet, device: SystemdContainer, name: str) -> str:
    """The ``data.rule`` of the refusal of ``name``, as ``coffer rpc`` shows it."""
    params = json.dumps({"filename": name})
    done = fleet.log.sh(device, f"coffer rpc stat '{params}'", check=False)
    assert done.returncode == UNTRUSTED, done
    rule: str = json.loads(done.stderr[done.stderr.index("{") :])["data"]["rule"]
    return rule


def test_a_device_delivers_only_what_the_publisher_signed(fleet: Fleet) -> None:
    # Through the packaged cofferd under systemd, trust required as shipped,
    # the fleet's root pinned: a signed upload is delivered; a later version
    # published without the publisher's key is stored upstream and never
    # delivered (the signed one is), and a resource nobody signed is refused
    # (`unsigned`); the upstream's database restored from an older backup
    # is refused (`rollback`).
    host, log = fleet.host, fleet.log
    _, two = fleet.devices
    _enrolled(two)
    signed_v1 = _sha256(host, f"/root/{RESOURCE}")
    log.note("the publisher's signed upload, loaded on a device")
    log.sh(two, "coffer trust status")
    log.sh(two, f"coffer load {RESOURCE} -o /root/v1.bin")
    assert _sha256(two, "/root/v1.bin") == signed_v1

    # What a backup of the upstream's database holds now: restored later.
    host.run("python3", "-c", BACKUP, DATABASE, "/root/upstream-backup.sqlite3")

    log.note("a later version published without the publisher's key: stored, never delivered")
    uploaded = log.sh(
        host,
        "head -c 300000 /dev/urandom > /root/unsigned.bin"
        f" && coffer upload /root/unsigned.bin --name {RESOURCE} --unsigned",
    )
    assert f"models/{RESOURCE} version 2" in uploaded.stdout
    listed = log.sh(host, f"coffer-upstream resource ls {UP_DATA}").stdout
    assert f"models/{RESOURCE}\t2\t" in listed
    loaded = log.sh(two, f"coffer load {RESOURCE} -o /root/after-unsigned.bin")
    assert f"models/{RESOURCE} version 1" in loaded.stdout
    assert _sha256(two, "/root/after-unsigned.bin") == signed_v1

    log.note("a resource nobody signed: refused")
    log.sh(
        host,
        "head -c 1000 /dev/urandom > /root/draft.bin && coffer upload /root/draft.bin --unsigned",
    )
    refused = log.sh(two, "coffer load draft.bin -o /root/draft.out", check=False)
    assert refused.returncode == UNTRUSTED, refused
    assert "no publisher signed a release of resources/models/draft.bin" in refused.stderr
    assert two.run("test", "-e", "/root/draft.out", check=False).returncode != 0
    assert _rpc_rule(fleet, two, "draft.bin") == "unsigned"

    log.note("the publisher signs the next version: delivered")
    signed = log.sh(
        host,
        "head -c 300000 /dev/urandom > /root/v3.bin"
        f" && coffer upload /root/v3.bin --name {RESOURCE} --sign-key {PUBLISHER_KEY}",
    )
    assert f"models/{RESOURCE} version 3" in signed.stdout
    loaded = log.sh(two, f"coffer load {RESOURCE} -o /root/v3.bin")
    assert f"models/{RESOURCE} version 3" in loaded.stdout
    assert _sha256(two, "/root/v3.bin") == _sha256(host, "/root/v3.bin")

    log.note("the upstream's database restored from the backup (version 1 signed): rollback")
    log.sh(host, "coffer-upstream trust status " + UP_DATA)
    host.run("systemctl", "stop", "fleet-upstream.service")
    log.sh(
        host,
        f"cp /root/upstream-backup.sqlite3 {DATABASE} && rm -f {DATABASE}-wal {DATABASE}-shm",
    )
    _serve_upstream(host, fleet.upstream)
    log.sh(host, "coffer-upstream trust status " + UP_DATA)
    rolled = log.sh(two, f"coffer load {RESOURCE} -o /root/rolled-back.bin", check=False)
    assert rolled.returncode == UNTRUSTED, rolled
    assert "older than seen before" in rolled.stderr
    assert two.run("test", "-e", "/root/rolled-back.bin", check=False).returncode != 0
    assert _rpc_rule(fleet, two, RESOURCE) == "rollback"
    status = log.sh(two, "coffer trust status").stdout
    assert "last refresh: failed (rollback)" in status

    _no_secret_anywhere(fleet)
    print("\n" + str(log))
