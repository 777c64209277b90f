"""Install, upgrade, remove, purge under a real systemd: what Debian policy says stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures.dockerd import PrivateDockerd
from fixtures.systemd import SystemdContainer

pytestmark = [pytest.mark.systemd, pytest.mark.docker, pytest.mark.slow]

CONFIG = "/etc/coffer/cofferd.toml"
CHANGED = 'upstream_url = "http://192.0.2.7:8443"'


def exists(box: SystemdContainer, path: str) -> bool:
    return box.run("test", "-e", path, check=False).returncode == 0


def test_upgrade_keeps_config_then_remove_keeps_data_and_purge_removes_it(
    systemd_container: SystemdContainer, coffer_deb: Path, coffer_deb_next: Path
) -> None:
    box = systemd_container
    box.copy_in(coffer_deb, "/tmp/old.deb")
    box.copy_in(coffer_deb_next, "/tmp/new.deb")
    box.run("dpkg", "-i", "/tmp/old.deb")
    box.run("sh", "-c", f"echo '{CHANGED}' >> {CONFIG}")
    box.run("coffer", "health")  # root may call too; this starts the daemon
    old = box.wait_for("cofferd.service", ActiveState="active", SubState="running")
    # The cache dir belongs to the daemon's user (tmpfiles.d, CacheDirectory=).
    assert box.run("stat", "-c", "%U %a", "/var/cache/coffer").stdout == "coffer 750\n"
    box.run("sh", "-c", "echo cached > /var/cache/coffer/marker")
    # As an older package left a device: its records key in /etc/coffer (made
    # by its postinst), none beside the identity, whose unit has not run yet.
    box.run(
        "sh",
        "-c",
        "head -c 32 /dev/urandom | tee /root/old-key"
        " | systemd-creds encrypt --name=coffer-device-key - /etc/coffer/device-key.cred"
        " && rm /var/lib/coffer-identity/device-key.cred",
    )
    box.run("systemctl", "stop", "coffer-identity.service")

    # Upgrade: the daemon stops before the files change and comes back after,
    # with the operator's config untouched (dpkg does not prompt: --force-confold
    # is not needed, the shipped file did not change).
    box.run("dpkg", "-i", "/tmp/new.deb")
    version = box.run("dpkg-query", "-W", "-f=${Version}", "coffer").stdout
    assert version.endswith("-2")
    assert CHANGED in box.run("cat", CONFIG).stdout
    new = box.wait_for("cofferd.service", ActiveState="active", SubState="running")
    assert new["MainPID"] != old["MainPID"]
    status = box.run("coffer", "status").stdout
    assert "http://192.0.2.7:8443" in status
    assert box.run("systemctl", "is-enabled", "cofferd.socket").stdout.strip() == "enabled"
    # The older records key moved beside the identity: the same key, so the
    # device's offline records keep opening; /etc/coffer no longer holds it.
    box.run(
        "sh",
        "-c",
        "systemd-creds decrypt --name=coffer-device-key"
        " /var/lib/coffer-identity/device-key.cred - | cmp - /root/old-key",
    )
    assert not exists(box, "/etc/coffer/device-key.cred")
    assert "moved the records key" in box.journal("coffer-identity.service")

    # Remove: the daemon and socket stop, the code goes; config and cache stay.
    box.run("dpkg", "-r", "coffer")
    assert box.show("cofferd.service", "ActiveState")["ActiveState"] == "inactive"
    assert not exists(box, "/run/coffer/cofferd.sock")
    assert not exists(box, "/opt/coffer/bin/cofferd")
    assert not exists(box, "/usr/bin/cofferd")
    assert CHANGED in box.run("cat", CONFIG).stdout
    assert box.run("cat", "/var/cache/coffer/marker").stdout == "cached\n"
    assert exists(box, "/var/lib/coffer")

    # Purge: config, cache and state go; the system user stays, as Debian does.
    box.run("dpkg", "-P", "coffer")
    gone = ("/etc/coffer", "/var/cache/coffer", "/var/lib/coffer", "/var/lib/coffer-identity")
    for path in (*gone, "/run/coffer"):
        assert not exists(box, path), path
    assert box.run("getent", "passwd", "coffer", check=False).returncode == 0
    leftovers = box.run("dpkg-query", "-W", "coffer", check=False)
    assert leftovers.returncode != 0


def test_installs_into_an_image_being_built_without_systemd_running(
    systemd_engine: PrivateDockerd, systemd_image: str, coffer_deb: Path
) -> None:
    # As when a device image is prepared: dpkg in the root, no systemd as PID 1.
    # The user and the enablement are made offline; nothing is started.
    script = (
        f"dpkg -i /debs/{coffer_deb.name} && id -nG coffer && "
        "readlink /etc/systemd/system/sockets.target.wants/cofferd.socket && "
        "cofferd --version && test ! -e /run/coffer/cofferd.sock"
    )
    proc = systemd_engine.docker(
        "run",
        "--rm",
        "--network=none",
        "-v",
        f"{coffer_deb.parent}:/debs:ro",
        systemd_image,
        "sh",
        "-c",
        script,
    )
    lines = proc.stdout.decode().splitlines()
    assert "coffer docker" in lines
    assert "/lib/systemd/system/cofferd.socket" in lines
    assert lines[-1].startswith("cofferd ")
