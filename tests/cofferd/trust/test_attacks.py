"""A device delivers only what a publisher signed: attacks through a hostile upstream.

Each test runs a real cofferd (trust required, the root pinned, a refresh at
every load) against :class:`fixtures.tuf_hostile.HostileUpstream`, edits the
upstream behind the daemon's back as an attacker holding an account, the
server or its storage would, and asserts the rule of the refusal (error 422,
``data.rule``), that nothing reached the caller's pipe and nothing landed in
the cache.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata

from fixtures.daemon import CofferdProcess, load_via_pipe
from fixtures.tuf_hostile import EMAIL, PASSWORD, HostileUpstream, Repo, encrypt

FOLDER, NAME = "models", "net.onnx"
V1 = b"the publisher's first release " * 1000
V2 = b"the publisher's second release " * 1000


@pytest.fixture
def hostile() -> Iterator[HostileUpstream]:
    up = HostileUpstream(Repo())
    yield up
    up.close()


@pytest.fixture
def device(
    cofferd: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> Callable[..., CofferdProcess]:
    def start(**env: str) -> CofferdProcess:
        d = cofferd(
            upstream_url=hostile.url,
            trust="required",
            trust_root=hostile.repo.root_json(1),
            env={"COFFER_TRUST_REFRESH_INTERVAL": "0", **env},
        )
        assert "result" in d.call("login", {"email": EMAIL, "password": PASSWORD})
        return d

    return start


def load(d: CofferdProcess) -> tuple[bytes, dict[str, Any]]:
    with d.connect() as sock:
        return load_via_pipe(sock, {"folder": FOLDER, "filename": NAME})


def refused(d: CofferdProcess, rule: str) -> dict[str, Any]:
    """A load refused with ``rule``: nothing in the pipe, nothing new in the cache."""
    before = cached(d)
    data, response = load(d)
    assert data == b""
    error = response["error"]
    assert (error["code"], error["data"]["rule"]) == (422, rule), error
    assert cached(d) == before
    assert not list((d.base / "cache").rglob(".tmp-*"))
    return error


def cached(d: CofferdProcess) -> list[Path]:
    root = d.base / "cache" / "big"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def delivered(d: CofferdProcess, plaintext: bytes, version: int) -> dict[str, Any]:
    data, response = load(d)
    assert "result" in response, response
    assert data == plaintext
    assert response["result"]["version"] == version
    return response["result"]


def test_a_signed_release_is_delivered_cold_then_warm(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    hostile.repo.publish(FOLDER, NAME, V1)
    d = device()
    assert delivered(d, V1, 1)["from_cache"] is False
    assert hostile.requests[f"GET /v1/resources/{FOLDER}/{NAME}/versions/1/segments"] == 1
    assert delivered(d, V1, 1)["from_cache"] is True
    status = d.call("trust.status")["result"]
    assert status["mode"] == "required"
    assert status["last_refresh"]["ok"] is True
    assert status["roles"]["timestamp"]["version"] >= 1


def test_no_root_pinned_refuses_every_load(
    cofferd: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    hostile.repo.publish(FOLDER, NAME, V1)
    d = cofferd(upstream_url=hostile.url, trust="required", pin=False)
    d.call("login", {"email": EMAIL, "password": PASSWORD})
    refused(d, "not-pinned")
    # Pinned over the socket, the same load goes through.
    assert d.call("trust.init", {"root": hostile.repo.root_json()})["result"]["version"] == 1
    delivered(d, V1, 1)


def test_trust_off_delivers_what_the_upstream_serves_and_says_so(
    cofferd: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    hostile.repo.publish(FOLDER, NAME, V1, sign=False)
    d = cofferd(upstream_url=hostile.url, trust="off")
    d.call("login", {"email": EMAIL, "password": PASSWORD})
    delivered(d, V1, 1)
    assert d.call("status")["result"]["trust"] == "off"
    assert "trust is off" in d.stderr_text()


def test_a_version_nobody_signed_is_not_delivered(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    hostile.repo.publish(FOLDER, NAME, V1)
    hostile.repo.publish(FOLDER, NAME, b"an account's own model, unsigned", sign=False)
    d = device()
    # The signed one is asked for by version and delivered; never the newer unsigned one.
    delivered(d, V1, 1)
    assert hostile.requests[f"GET /v1/resources/{FOLDER}/{NAME}?version=1"] >= 1
    # A resource with no signed release at all: unsigned.
    hostile.repo.publish(FOLDER, "other.onnx", b"unsigned", sign=False)
    with d.connect() as sock:
        data, response = load_via_pipe(sock, {"folder": FOLDER, "filename": "other.onnx"})
    assert data == b""
    assert response["error"]["data"]["rule"] == "unsigned"


def test_a_signed_version_served_as_something_else_is_refused(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    hostile.repo.publish(FOLDER, NAME, V1)
    # The server answers ?version=1 with version 2's bytes (unsigned).
    stored = hostile.repo.publish(FOLDER, NAME, V2, sign=False)
    hostile.repo.resources[(FOLDER, NAME)][1] = encrypt(FOLDER, NAME, V2, 1, key=stored.key)
    d = device()
    refused(d, "digest")


def test_key_swapped_for_another_resources_is_refused(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    mine = hostile.repo.publish(FOLDER, NAME, V1)
    theirs = hostile.repo.publish(FOLDER, "other.onnx", V2)
    # Only the key: the commitment names the rule.
    mine.key = theirs.key
    d = device()
    refused(d, "key-commitment")


def test_key_and_ciphertext_swapped_for_another_resources_are_refused(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    hostile.repo.publish(FOLDER, NAME, V1)
    theirs = hostile.repo.publish(FOLDER, "other.onnx", V2)
    versions = hostile.repo.resources[(FOLDER, NAME)]
    versions[1] = encrypt(FOLDER, "other.onnx", V2, 1, key=theirs.key)
    versions[1].small, versions[1].big = theirs.small, theirs.big
    d = device()
    refused(d, "digest")


def test_the_same_key_re_encrypting_other_plaintext_is_refused_cold(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    # Same key, same small part (header and first bytes), other plaintext after:
    # every field the answer carries matches; only the chunks' digests differ.
    original = hostile.repo.publish(FOLDER, NAME, V1)
    signed_big = original.big
    forged_plain = V1[:64] + b"X" * (len(V1) - 64)
    forged = encrypt(FOLDER, NAME, forged_plain, 1, key=original.key)
    assert forged.small != original.small  # a new salt: make it keep the old one
    hostile.repo.resources[(FOLDER, NAME)][1].big = forged.big
    # The answer announces the signed digest of the big part (a lying upstream).
    big_sha = hashlib.sha256(signed_big).hexdigest()

    def lie(handler: BaseHTTPRequestHandler) -> None:
        body = json.dumps(
            {
                "folder": FOLDER,
                "name": NAME,
                "version": 1,
                "small": base64.b64encode(original.small).decode(),
                "key": base64.b64encode(original.key).decode(),
                "big_url": f"{hostile.url}/big/{FOLDER}/{NAME}/1",
                "big_size": len(signed_big),
                "big_sha256": big_sha,
                "plaintext_size": len(V1),
            }
        ).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    hostile.override[f"/v1/resources/{FOLDER}/{NAME}?version=1"] = lie
    assert len(forged.big) == len(signed_big)
    d = device()
    assert cached(d) == []
    refused(d, "segment")
    assert cached(d) == []


def test_a_manifest_other_than_the_signed_is_refused(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    stored = hostile.repo.publish(FOLDER, NAME, V1)
    stored.manifest = bytes(len(stored.manifest))
    d = device()
    refused(d, "digest")


def test_an_older_signed_version_served_again_is_rollback(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    repo = hostile.repo
    v1 = repo.publish(FOLDER, NAME, V1)
    repo.publish(FOLDER, NAME, V2)
    d = device()
    delivered(d, V2, 2)
    # The publisher's role signs version 1 again (an old delegation's key, or the
    # publisher tricked): TUF's versions move forward, the resource's goes back.
    repo.sign_release(v1.release(FOLDER, NAME))
    refused(d, "rollback")


def test_rollback_is_remembered_across_restart_and_eviction(
    cofferd: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    repo = hostile.repo
    v1 = repo.publish(FOLDER, NAME, V1)
    repo.publish(FOLDER, NAME, V2)
    d = cofferd(
        upstream_url=hostile.url,
        trust="required",
        trust_root=repo.root_json(1),
        env={"COFFER_TRUST_REFRESH_INTERVAL": "0"},
    )
    d.call("login", {"email": EMAIL, "password": PASSWORD})
    delivered(d, V2, 2)
    assert "result" in d.call("evict", {"folder": FOLDER, "filename": NAME})
    d.stop()
    repo.sign_release(v1.release(FOLDER, NAME))
    env = {k: v for k, v in d.env.items()}
    d2 = cofferd(
        upstream_url=hostile.url,
        trust="required",
        env={
            "COFFER_TRUST_REFRESH_INTERVAL": "0",
            "COFFER_STATE_DIR": env["COFFER_STATE_DIR"],
            "COFFER_CACHE_DIR": env["COFFER_CACHE_DIR"],
        },
    )
    d2.call("login", {"email": EMAIL, "password": PASSWORD})
    refused(d2, "rollback")


def test_a_frozen_timestamp_is_refused(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    repo = hostile.repo
    repo.publish(FOLDER, NAME, V1)
    d = device()
    # A new timestamp that has already expired (an upstream keeping a device on an old state).
    repo.commit(timestamp_days=-1)
    refused(d, "frozen")
    assert d.call("trust.status")["result"]["last_refresh"]["rule"] == "frozen"


def test_an_old_timestamp_served_again_is_rollback(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    repo = hostile.repo
    repo.publish(FOLDER, NAME, V1)
    old = repo.files["timestamp.json"]
    repo.publish(FOLDER, NAME, V2)
    d = device()
    delivered(d, V2, 2)
    repo.files["timestamp.json"] = old
    refused(d, "rollback")


def test_mixed_snapshot_and_targets_are_refused(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    repo = hostile.repo
    repo.publish(FOLDER, NAME, V1)
    d = device()
    delivered(d, V1, 1)
    # The snapshot names publishers version N; the server hands another file as N.
    repo.publish(FOLDER, NAME, V2)
    pv = repo.publishers.signed.version
    repo.files[f"{pv}.publishers.json"] = repo.files[f"{pv - 1}.publishers.json"]
    refused(d, "mix-and-match")


def test_an_endless_metadata_file_is_refused(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    hostile.repo.publish(FOLDER, NAME, V1)
    d = device()

    def endless(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        block = b" " * 65536
        try:
            for _ in range(10_000):  # 640 MiB, far past python-tuf's cap
                handler.wfile.write(block)
        except OSError:
            pass
        handler.close_connection = True

    hostile.override["/v1/tuf/timestamp.json"] = endless
    refused(d, "endless-data")


def test_metadata_not_signed_by_the_online_key_is_refused(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    repo = hostile.repo
    repo.publish(FOLDER, NAME, V1)
    d = device()
    repo.online = CryptoSigner.generate_ed25519()  # the server signs with a key root never named
    repo.commit()
    refused(d, "signature")


def test_a_device_pinned_at_root_1_follows_a_rotation_to_2(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    repo = hostile.repo
    repo.publish(FOLDER, NAME, V1)
    d = device()
    delivered(d, V1, 1)
    repo.rotate_root([CryptoSigner.generate_ed25519(), CryptoSigner.generate_ed25519()])
    repo.root.signed.roles["root"].threshold = 1
    repo.publish(FOLDER, NAME, V2)
    delivered(d, V2, 2)
    status = d.call("trust.status")["result"]
    assert status["root"]["version"] == 2
    assert set(status["root"]["key_ids"]) >= {s.public_key.keyid for s in repo.root_signers}


def test_a_publisher_key_revoked_by_new_targets_stops_verifying(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    repo = hostile.repo
    repo.publish(FOLDER, NAME, V1)
    d = device()
    delivered(d, V1, 1)
    # The owner revokes the publisher's key: a new targets delegating to another key.
    successor = CryptoSigner.generate_ed25519()
    repo.delegate([successor])
    repo.sign_targets()
    repo.commit()
    refused(d, "signature")
    # Until another publisher signs again.
    repo.publisher = successor
    repo.sign_publishers()
    repo.commit()
    delivered(d, V1, 1)


def test_an_unreachable_upstream_is_not_a_trust_refusal(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    hostile.repo.publish(FOLDER, NAME, V1)
    d = device()
    delivered(d, V1, 1)
    hostile.down = True
    _, response = load(d)
    assert response["error"]["code"] in (412, 503), response


def test_trust_init_refuses_another_root_unless_replaced(
    device: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    repo = hostile.repo
    repo.publish(FOLDER, NAME, V1)
    d = device()
    delivered(d, V1, 1)
    same = d.call("trust.init", {"root": repo.root_json(1)})
    assert same["result"]["replaced"] is False
    other = Repo()
    conflict = d.call("trust.init", {"root": other.root_json()})
    assert conflict["error"]["code"] == 409
    unsigned = Metadata.from_bytes(other.root_json().encode())
    unsigned.signatures.clear()
    bad = d.call("trust.init", {"root": unsigned.to_bytes().decode()})
    assert bad["error"]["code"] == 400
    replaced = d.call("trust.init", {"root": other.root_json(), "replace": True})
    assert replaced["result"]["replaced"] is True
    # The old upstream's metadata does not verify under the new root.
    _, response = load(d)
    assert response["error"]["code"] == 422


def test_a_tampered_pinned_root_anchors_nothing(
    cofferd: Callable[..., CofferdProcess], hostile: HostileUpstream
) -> None:
    # A root.json edited in the state dir (its expiry pushed, a key added) no
    # longer carries its own threshold of signatures: python-tuf refuses it as
    # the anchor, and nothing is delivered.
    repo = hostile.repo
    repo.publish(FOLDER, NAME, V1)
    md = Metadata.from_bytes(repo.root_json(1).encode())
    md.signed.expires = datetime.now(UTC) + timedelta(days=3650)
    d = cofferd(
        upstream_url=hostile.url,
        trust="required",
        trust_root=md.to_bytes(),
        env={"COFFER_TRUST_REFRESH_INTERVAL": "0"},
    )
    d.call("login", {"email": EMAIL, "password": PASSWORD})
    refused(d, "signature")
