"""``coffer-upstream enroll-token`` and ``device``: the admin side of device identities."""

from __future__ import annotations

import json
import re

from fixtures.devices import Device, enrollment_token
from fixtures.upstream import Upstream


def test_enroll_token_create_prints_the_token_once_and_keeps_its_digest(
    upstream: Upstream,
) -> None:
    done = upstream.admin(
        "enroll-token", "create", "--uses", "3", "--expires", "30m", "--role", "reader"
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    # The token alone on stdout, what it is on stderr.
    assert re.fullmatch(r"cet_[A-Za-z0-9_-]{43}", token)
    assert re.match(r"enrollment token et_[0-9a-f]{12}: reader, 3 use\(s\), expires ", done.stderr)
    assert token not in done.stderr
    # Stored hashed: the token is nowhere in the database or what ls prints.
    listing = upstream.admin("enroll-token", "ls")
    assert token not in listing.stdout
    if upstream.database_url is None:
        for path in upstream.data_dir.glob("upstream.sqlite3*"):
            assert token.encode() not in path.read_bytes()
    assert Device().enroll(upstream, token).status_code == 201
    (row,) = json.loads(upstream.admin("enroll-token", "ls", "--json").stdout)
    assert row["uses_left"] == 2
    assert row["role"] == "reader"
    assert row["state"] == "active"


def test_enroll_token_create_refuses_bad_input(upstream: Upstream) -> None:
    for args in [
        ("--uses", "0", "--expires", "1h", "--role", "reader"),
        ("--uses", "-1", "--expires", "1h", "--role", "reader"),
        ("--uses", "1", "--expires", "1w", "--role", "reader"),
        ("--uses", "1", "--expires", "0m", "--role", "reader"),
        ("--uses", "1", "--expires", "400d", "--role", "reader"),
        ("--uses", "1", "--expires", "h", "--role", "reader"),
        ("--uses", "1", "--expires", "1h", "--role", "admin"),
        ("--uses", "1", "--expires", "1h"),
    ]:
        done = upstream.admin("enroll-token", "create", *args)
        assert done.returncode == 2, args
        assert "Traceback" not in done.stderr
    assert json.loads(upstream.admin("enroll-token", "ls", "--json").stdout) == []


def test_revoking_tokens_and_devices(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=2)
    device = Device()
    device.enroll(upstream, token.token, name="line 3 camera")
    listing = upstream.admin("device", "ls")
    assert listing.returncode == 0
    header, row = listing.stdout.splitlines()
    assert header.split("\t") == ["ID", "NAME", "ENROLLED", "LAST SEEN", "ROLE", "REVOKED"]
    fields = row.split("\t")
    assert fields[0] == device.device_id
    assert fields[1] == "line 3 camera"
    assert fields[3:] == ["never", "reader", "no"]
    done = upstream.admin("device", "revoke", device.device_id)
    assert done.stdout.strip() == f"revoked device {device.device_id}"
    again = upstream.admin("device", "revoke", device.device_id)
    assert again.returncode == 0
    assert "already revoked" in again.stdout
    assert upstream.admin("device", "ls").stdout.splitlines()[1].split("\t")[5] != "no"
    assert upstream.admin("enroll-token", "revoke", token.id).returncode == 0
    assert "already revoked" in upstream.admin("enroll-token", "revoke", token.id).stdout
    for kind in ("device", "enroll-token"):
        unknown = upstream.admin(kind, "revoke", "nope")
        assert unknown.returncode == 1
        assert "no " in unknown.stderr
