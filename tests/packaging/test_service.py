"""The installed .deb under a real systemd (PID 1 in a container): socket
activation, who may call, stop and restart, the watchdog, and the daemon's
real work (login, upload, load, unlock into a Docker engine) in its sandbox."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.dockerd import PrivateDockerd
from fixtures.systemd import (
    SystemdContainer,
    Transcript,
    fleet_root,
    upstream_command,
    upstream_wrapper,
)

pytestmark = [pytest.mark.systemd, pytest.mark.docker, pytest.mark.slow]

MEMBER = "alice"  # in group coffer
OUTSIDER = "bob"  # not
DAEMON_UNAVAILABLE = 3  # coffer's exit code
PUBLISHER_KEY = f"/home/{MEMBER}/publisher.key"  # the member publishes, with their own key
EMAIL = "publisher@example.org"
PASSWORD = "correct-horse-battery"  # a test account's; passed on stdin only
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def device_engine() -> Iterator[PrivateDockerd]:
    """The device's own Docker engine, its socket mounted as /run/docker.sock."""
    with PrivateDockerd() as engine:
        yield engine


@pytest.fixture(scope="module")
def device(
    systemd_engine: PrivateDockerd,
    device_engine: PrivateDockerd,
    systemd_image: str,
    coffer_deb: Path,
) -> Iterator[SystemdContainer]:
    """A booted Debian 12 with the .deb installed by dpkg, and two login users."""
    box = SystemdContainer(
        systemd_engine,
        systemd_image,
        f"coffer-svc-{os.getpid()}",
        run_args=["-v", f"{device_engine.socket}:/run/docker.sock"],
    )
    try:
        box.boot()
        box.copy_in(coffer_deb, "/tmp/coffer.deb")
        box.run("dpkg", "-i", "/tmp/coffer.deb")
        box.run("useradd", "--create-home", "--groups", "coffer", MEMBER)
        box.run("useradd", "--create-home", OUTSIDER)
        # As on a device: the engine's socket belongs to group docker (the
        # package made that group; its gid is the container's).
        docker_gid = int(box.run("getent", "group", "docker").stdout.split(":")[2])
        os.chown(device_engine.socket, 0, docker_gid)
        # The publisher's key, made on their side with the packaged tools; the
        # root of each upstream below delegates to it.
        box.run("coffer", "keys", "generate", PUBLISHER_KEY.removesuffix(".key"), user=MEMBER)
        yield box
    finally:
        box.remove()


def trusted(
    device: SystemdContainer, upstream_site: Path, data_dir: str, transcript: Transcript
) -> str:
    """The upstream of ``data_dir`` with a TUF repository (the owner's root and targets).

    The package ships no root and trust is required: the operator makes one
    with the owner's tools and pins it (:func:`pin`) once cofferd points at
    this upstream. Answers the root's path on ``device``.
    """
    upstream_wrapper(device, upstream_site)
    owner = "/root/owner-" + data_dir.strip("/").replace("/", "-")
    return fleet_root(device, transcript, data_dir, PUBLISHER_KEY[:-4] + ".pub", owner)


def pin(device: SystemdContainer, root: str, transcript: Transcript) -> None:
    """``coffer trust init`` as the operator (root), replacing the last test's root if any."""
    pinned = transcript.sh(device, f"coffer trust init --replace {root}").stdout
    # The owner's key (root and targets) and the upstream's online key.
    said = r"(pinned|replaced the pinned root with) root version 1 \(2 keys\)\n"
    assert re.fullmatch(said, pinned), pinned
    status = transcript.sh(device, "coffer trust status").stdout.splitlines()
    assert status[:2] == ["trust:        required", "pinned root:  version 1"], status


def test_installed_user_units_and_socket(device: SystemdContainer) -> None:
    groups = device.run("id", "-nG", "coffer").stdout.split()
    assert groups == ["coffer", "docker"]
    shell = device.run("getent", "passwd", "coffer").stdout.strip().split(":")[-1]
    assert shell == "/usr/sbin/nologin"
    assert device.run("systemctl", "is-enabled", "cofferd.socket").stdout.strip() == "enabled"
    device.wait_for("cofferd.socket", ActiveState="active", SubState="listening")
    # Nothing has called yet: the daemon is not running.
    assert device.show("cofferd.service", "ActiveState")["ActiveState"] == "inactive"
    stat = device.run("stat", "-c", "%U:%G %a", "/run/coffer/cofferd.sock", "/run/coffer").stdout
    assert stat.split("\n")[:2] == ["root:coffer 660", "coffer:coffer 750"]
    verify = device.run(
        "systemd-analyze",
        "verify",
        "cofferd.service",
        "cofferd.socket",
        "coffer-identity.service",
        check=False,
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr == ""


def test_hardening_exposure_is_low(device: SystemdContainer) -> None:
    out = device.run("systemd-analyze", "security", "--no-pager", "cofferd.service").stdout
    exposure = re.search(r"Overall exposure level for cofferd.service: ([\d.]+)", out)
    assert exposure is not None, out
    print(f"systemd-analyze security cofferd.service: {exposure.group(1)}")
    assert float(exposure.group(1)) <= 2.0


def test_a_group_member_starts_the_daemon_by_calling_it(device: SystemdContainer) -> None:
    health = device.run("coffer", "health", user=MEMBER)
    assert "ok" in health.stdout
    status = device.run("coffer", "--json", "status", user=MEMBER)
    assert '"authenticated": false' in status.stdout
    props = device.wait_for("cofferd.service", ActiveState="active", SubState="running")
    assert props["MainPID"] != "0"
    # READY=1 got it to running; STATUS= is what systemctl shows.
    shown = device.run("systemctl", "status", "--no-pager", "cofferd.service").stdout
    status_text = device.show("cofferd.service", "StatusText")["StatusText"]
    assert status_text
    assert f'Status: "{status_text}"' in shown
    owner = device.run("stat", "-c", "%U", f"/proc/{props['MainPID']}").stdout.strip()
    assert owner == "coffer"


def test_a_caller_outside_the_group_is_refused(device: SystemdContainer) -> None:
    proc = device.run("coffer", "health", user=OUTSIDER, check=False)
    assert proc.returncode == DAEMON_UNAVAILABLE
    assert "permission denied" in proc.stderr.lower()
    assert proc.stdout == ""


def test_stop_then_the_next_call_starts_it_again(device: SystemdContainer) -> None:
    device.run("coffer", "health")
    device.run("systemctl", "stop", "cofferd.service")
    device.wait_for("cofferd.service", ActiveState="inactive")
    device.wait_for("cofferd.socket", ActiveState="active", SubState="listening")
    assert "Stopped cofferd.service" in device.journal("cofferd.service", lines=5)
    device.run("coffer", "health")
    device.wait_for("cofferd.service", ActiveState="active", SubState="running")


def test_restart_gives_a_new_process(device: SystemdContainer) -> None:
    device.run("coffer", "health")
    before = device.wait_for("cofferd.service", ActiveState="active")["MainPID"]
    device.run("systemctl", "restart", "cofferd.service")
    after = device.wait_for("cofferd.service", ActiveState="active", SubState="running")
    assert after["MainPID"] not in ("0", before)
    device.run("coffer", "health")


def test_a_hung_daemon_is_restarted_by_the_watchdog(device: SystemdContainer) -> None:
    dropin = "/etc/systemd/system/cofferd.service.d/test-watchdog.conf"
    device.run("mkdir", "-p", str(Path(dropin).parent))
    device.run("sh", "-c", f"printf '[Service]\\nWatchdogSec=3s\\n' > {dropin}")
    try:
        device.run("systemctl", "daemon-reload")
        device.run("systemctl", "restart", "cofferd.service")
        healthy = device.wait_for("cofferd.service", ActiveState="active", SubState="running")
        restarts = int(healthy["NRestarts"])
        # A daemon that pings keeps running past several watchdog periods.
        device.run("sleep", "7")
        still = device.show("cofferd.service", "MainPID", "NRestarts")
        assert still == {"MainPID": healthy["MainPID"], "NRestarts": str(restarts)}

        device.run("systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", "cofferd.service")
        device.wait_for(
            "cofferd.service", timeout=30, NRestarts=str(restarts + 1), SubState="running"
        )
        assert "Failed with result 'watchdog'" in device.journal("cofferd.service")
        device.run("coffer", "health")
    finally:
        device.run("rm", "-f", dropin)
        device.run("systemctl", "daemon-reload")


def test_the_hardened_daemon_does_its_job_with_a_real_upstream(
    device: SystemdContainer,
    device_engine: PrivateDockerd,
    tmp_path: Path,
    upstream_site: Path,
) -> None:
    transcript = Transcript()
    # The reference upstream runs in the container on loopback (the container
    # has no other network), from the source tree, on the package's Python.
    # A login, an upload and a load through the packaged daemon show that its
    # sandbox lets it reach TCP, write its cache dir, and use the caller's fds
    # for files in a home it cannot see (ProtectHome=); an unlock, that it
    # reaches the Docker engine's socket as a member of group docker.
    upstream = upstream_command(device, upstream_site)
    device.run(
        *upstream,
        "user",
        "add",
        EMAIL,
        "--role=publisher",
        "--data-dir=/srv/upstream-data",
        input=PASSWORD + "\n",
    )
    root = trusted(device, upstream_site, "/srv/upstream-data", transcript)
    device.run(
        "systemd-run",
        "--unit=reference-upstream",
        *upstream,
        "serve",
        "--host=127.0.0.1",
        "--port=8099",
        "--data-dir=/srv/upstream-data",
    )
    dropin = "/etc/systemd/system/cofferd.service.d/test-upstream.conf"
    device.run("mkdir", "-p", str(Path(dropin).parent))
    device.run(
        "sh",
        "-c",
        f"printf '[Service]\\nEnvironment=COFFER_UPSTREAM_URL=http://127.0.0.1:8099\\n' > {dropin}",
    )
    try:
        device.run("systemctl", "daemon-reload")
        device.run("systemctl", "restart", "cofferd.service")
        device.wait_for("reference-upstream.service", ActiveState="active")
        pin(device, root, transcript)
        # The daemon's login is the operator's (login_uids: root and cofferd's
        # own uid); a member may use it, not change it.
        refused = device.run(
            "coffer", "login", "--email", EMAIL, user=MEMBER, input=PASSWORD + "\n", check=False
        )
        assert refused.returncode == 4, refused
        assert "login_uids" in refused.stderr
        device.run("coffer", "login", "--email", EMAIL, input=PASSWORD + "\n")
        transcript.sh(
            device,
            "head -c 3000000 /dev/urandom > ~/model.bin"
            f" && coffer upload ~/model.bin --sign-key {PUBLISHER_KEY}",
            user=MEMBER,
        )
        transcript.sh(device, "coffer load model.bin -o ~/copy.bin", user=MEMBER)
        transcript.sh(device, "cmp ~/model.bin ~/copy.bin", user=MEMBER)
        cached = device.run("find", "/var/cache/coffer", "-type", "f", "-size", "+1000k").stdout
        assert cached.strip()
        owners = device.run("stat", "-c", "%U %a", *cached.split()).stdout.splitlines()
        assert all(line.startswith("coffer ") for line in owners)

        # The device's images: sealed by the publisher, unlocked by the member.
        device_engine.build_image("device/app:1", {"app/hello.txt": b"hello"})
        device_engine.save(["device/app:1"], tmp_path / "images.tar")
        device_engine.remove_image("device/app:1")
        device.copy_in(tmp_path / "images.tar", "/tmp/images.tar")
        device.run(
            *("coffer", "archive", "seal", "/tmp/images.tar", "/tmp/images.coffer"),
            *("--id=device-1", "--upstream=http://127.0.0.1:8099", f"--email={EMAIL}"),
            "--password-stdin",
            f"--sign-key={PUBLISHER_KEY}",
            input=PASSWORD + "\n",
        )
        device.run(
            "install",
            "-o",
            "coffer",
            "-g",
            "coffer",
            "-m",
            "0640",
            "/tmp/images.coffer",
            "/var/lib/coffer/images.coffer",
        )
        unlock = device.run(
            "coffer", "unlock", "--email", EMAIL, "--wait", user=MEMBER, input=PASSWORD + "\n"
        )
        assert "ready" in unlock.stdout
        tags = [t for image in device_engine.client().images.list() for t in image.tags]
        assert tags == ["device/app:1"]
        assert PASSWORD not in device.journal("cofferd.service", lines=300)
        assert "PRIVATE KEY" not in device.journal("cofferd.service", lines=300)
    finally:
        print(transcript)
        device.run("systemctl", "stop", "reference-upstream.service", check=False)
        device.run("rm", "-f", dropin)
        device.run("systemctl", "daemon-reload")
        device.run("systemctl", "restart", "cofferd.service")


#: Run in the container: the offline record the daemon sealed opens with the
#: device key coffer-identity.service made (decrypted by systemd-creds), and with no other.
RECORD_CHECK = """
import json, os, sqlite3, subprocess, sys
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
db = sqlite3.connect("file:/var/lib/coffer/index.sqlite3?mode=ro", uri=True)
folder, name, sealed = db.execute("SELECT folder, name, sealed FROM records").fetchone()
key = subprocess.run(
    ["systemd-creds", "decrypt", "--name=coffer-device-key",
     "/var/lib/coffer-identity/device-key.cred", "-"],
    capture_output=True, check=True,
).stdout
ad = f"coffer/v1/record/{folder}/{name}".encode()
nonce, body = sealed[3:15], sealed[15:]
try:
    AESGCM(os.urandom(32)).decrypt(nonce, body, ad)
    sys.exit("opened with a random key")
except InvalidTag:
    pass
print(json.loads(AESGCM(key).decrypt(nonce, body, ad))["name"])
"""


def test_boot_login_from_the_operator_credential_and_sealed_records(
    device: SystemdContainer,
    upstream_site: Path,
) -> None:
    # The operator stores a login with `coffer credentials set-login`; after a
    # restart a caller's load works without any `coffer login`, and the record
    # it leaves is sealed with the device key made on the device at boot.
    transcript = Transcript()
    upstream = upstream_command(device, upstream_site)
    data = "--data-dir=/srv/field-upstream"
    device.run(*upstream, "user", "add", EMAIL, "--role=publisher", data, input=PASSWORD + "\n")
    key = device.run(*upstream, "lease-key", data).stdout.strip()
    root = trusted(device, upstream_site, "/srv/field-upstream", transcript)
    device.run(
        "systemd-run",
        "--unit=field-upstream",
        *upstream,
        "serve",
        "--host=127.0.0.1",
        "--port=8098",
        data,
    )
    dropin = "/etc/systemd/system/cofferd.service.d/test-field.conf"
    device.run("mkdir", "-p", str(Path(dropin).parent))
    device.run(
        "sh",
        "-c",
        "printf '[Service]\\nEnvironment=COFFER_UPSTREAM_URL=http://127.0.0.1:8098\\n"
        f"Environment=COFFER_LEASE_PUBLIC_KEYS={key}\\n' > {dropin}",
    )
    try:
        made = device.run("stat", "-c", "%U %a", "/var/lib/coffer-identity/device-key.cred")
        assert made.stdout.strip() == "root 600"
        device.wait_for("field-upstream.service", ActiveState="active")
        pin(device, root, transcript)
        device.run(
            "coffer",
            "credentials",
            "set-login",
            "--email",
            EMAIL,
            "--password-stdin",
            input=PASSWORD + "\n",
        )
        assert (
            "LoadCredentialEncrypted=coffer-login:/etc/coffer/login.cred"
            in device.run("cat", "/etc/systemd/system/cofferd.service.d/login.conf").stdout
        )
        device.run("systemctl", "restart", "cofferd.service")
        transcript.sh(
            device,
            "head -c 1000000 /dev/urandom > ~/field.bin"
            f" && coffer upload ~/field.bin --sign-key {PUBLISHER_KEY}"
            " && coffer load field.bin -o ~/field.out && cmp ~/field.bin ~/field.out",
            user=MEMBER,
        )
        status = device.run("coffer", "status", "--json", user=MEMBER).stdout
        assert '"login_source": "credential"' in status
        assert '"device_key": true' in status
        opened = device.run("/opt/coffer/bin/python", "-c", RECORD_CHECK).stdout.strip()
        assert opened == "field.bin"
        assert PASSWORD not in device.journal("cofferd.service", lines=300)
    finally:
        print(transcript)
        device.run("coffer", "credentials", "remove-login", check=False)
        device.run("systemctl", "stop", "field-upstream.service", check=False)
        device.run("rm", "-f", dropin)
        device.run("systemctl", "daemon-reload")
        device.run("systemctl", "restart", "cofferd.service")


@contextlib.contextmanager
def reference_upstream(device: SystemdContainer, port: int, upstream_site: Path) -> Iterator[None]:
    """The reference upstream in the container on loopback, its root pinned, cofferd on it."""
    transcript = Transcript()
    upstream = upstream_command(device, upstream_site)
    data = f"--data-dir=/srv/upstream-{port}"
    device.run(*upstream, "user", "add", EMAIL, "--role=publisher", data, input=PASSWORD + "\n")
    root = trusted(device, upstream_site, f"/srv/upstream-{port}", transcript)
    unit = f"reference-upstream-{port}"
    device.run(
        "systemd-run",
        f"--unit={unit}",
        *upstream,
        "serve",
        "--host=127.0.0.1",
        f"--port={port}",
        data,
    )
    dropin = "/etc/systemd/system/cofferd.service.d/test-upstream.conf"
    device.run("mkdir", "-p", str(Path(dropin).parent))
    env = f"[Service]\\nEnvironment=COFFER_UPSTREAM_URL=http://127.0.0.1:{port}\\n"
    device.run("sh", "-c", f"printf '{env}' > {dropin}")
    try:
        device.run("systemctl", "daemon-reload")
        device.run("systemctl", "restart", "cofferd.service")
        device.wait_for(f"{unit}.service", ActiveState="active")
        pin(device, root, transcript)
        yield
    finally:
        print(transcript)
        device.run("systemctl", "stop", f"{unit}.service", check=False)
        device.run("rm", "-f", dropin)
        device.run("systemctl", "daemon-reload")
        device.run("systemctl", "restart", "cofferd.service")


def test_a_load_leaves_an_audit_record_in_the_journal(
    device: SystemdContainer, upstream_site: Path
) -> None:
    # cofferd runs under journald (JOURNAL_STREAM, /run/systemd/journal/socket):
    # its audit records go natively, with fields an operator can filter on.
    uid = device.run("id", "-u", MEMBER).stdout.strip()
    with reference_upstream(device, 8098, upstream_site):
        device.run("coffer", "login", "--email", EMAIL, input=PASSWORD + "\n")
        device.run(
            "sh",
            "-c",
            "head -c 100000 /dev/urandom > ~/audited.bin"
            f" && coffer upload ~/audited.bin --sign-key {PUBLISHER_KEY}",
            user=MEMBER,
        )
        device.run("sh", "-c", "coffer load audited.bin -o ~/audited.copy", user=MEMBER)
        query = ["journalctl", "-u", "cofferd", "COFFER_METHOD=load", "-o", "json", "--no-pager"]
        deadline = time.monotonic() + 30
        while True:
            out = device.run(*query, check=False).stdout
            records = [json.loads(line) for line in out.splitlines() if line.strip()]
            loads = [r for r in records if r.get("COFFER_NAME") == "audited.bin"]
            if loads or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        journal = device.journal("cofferd.service", lines=300)
    assert loads, f"no audit record of the load: {out[-2000:]}"
    record = loads[-1]
    print("audit record:", json.dumps(record, indent=2, sort_keys=True))
    assert record["COFFER_UID"] == uid
    assert record["MESSAGE_ID"] == "57ceaf16529b48b6a928cb96acdcfad8"
    assert record["COFFER_OUTCOME"] == "ok"
    assert record["COFFER_FOLDER"] == "models"
    assert record["COFFER_BYTES"] == "100000"
    assert int(record["COFFER_VERSION"]) >= 1
    assert record["_SYSTEMD_UNIT"] == "cofferd.service"
    assert (
        f"load ok models/audited.bin v{record['COFFER_VERSION']} 100000 bytes uid={uid}"
        in (record["MESSAGE"])
    )
    # One entry per call: the native record, not also a call line on stderr.
    assert "cofferd.call: load" not in journal
    assert PASSWORD not in journal
