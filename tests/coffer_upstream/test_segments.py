"""Segment manifests on a commit, a given version (``?version=N``) and
``/versions/{N}/segments`` (docs/upstream-protocol.md, trust metadata)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import requests

from fixtures import trust as tuf_fixtures
from fixtures.upstream import Upstream


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class Publishing:
    """Begin, PUT and commit, each alone (as in test_resources)."""

    def __init__(self, upstream: Upstream) -> None:
        self.base = f"{upstream.url}/v1/resources/models/m"
        self.headers = upstream.auth(upstream.publisher)

    def begin(self) -> dict[str, Any]:
        answer = requests.post(f"{self.base}/uploads", json={}, headers=self.headers, timeout=30)
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def put(self, upload: dict[str, Any], big: bytes) -> requests.Response:
        return requests.put(upload["big_url"], data=big, timeout=60)

    def commit(self, upload: dict[str, Any], **fields: Any) -> requests.Response:
        url = f"{self.base}/uploads/{upload['upload_id']}/commit"
        return requests.post(url, json=fields, headers=self.headers, timeout=60)


def fields_for(big: bytes, **more: Any) -> dict[str, Any]:
    return {
        "small": b64(b"s" * 40),
        "key": b64(bytes(32)),
        "big_size": len(big),
        "big_sha256": hashlib.sha256(big).hexdigest(),
        "plaintext_size": 7,
        **more,
    }


def test_a_manifest_of_the_wrong_length_is_400_and_nothing_is_committed(
    upstream: Upstream,
) -> None:
    big = bytes(2500)
    publishing = Publishing(upstream)
    upload = publishing.begin()
    assert publishing.put(upload, big).ok
    right = tuf_fixtures.segment_manifest(big, 1000)
    assert len(right) == 3 * 32
    for segment_size, manifest, words in (
        (1000, right[:-32], "need 96"),
        (1000, right + bytes(32), "need 96"),
        (2500, right, "need 32"),
        (0, b"", "at least 1"),
        ("1000", right, "integer"),
        (1000, "not base64!", "base64"),
    ):
        fields = fields_for(big, segment_size=segment_size, segments=manifest)
        if isinstance(manifest, bytes):
            fields["segments"] = b64(manifest)
        answer = publishing.commit(upload, **fields)
        assert answer.status_code == 400, (segment_size, answer.text)
        assert words in answer.json()["detail"]
    alone = publishing.commit(upload, **fields_for(big, segment_size=1000))
    assert alone.status_code == 400
    assert "together" in alone.json()["detail"]
    headers = upstream.auth(upstream.reader)
    assert requests.get(publishing.base, headers=headers, timeout=30).status_code == 404
    # The right one commits; an empty big part has an empty manifest.
    answer = publishing.commit(upload, **fields_for(big, segment_size=1000, segments=b64(right)))
    assert answer.status_code == 200, answer.text


def test_versions_and_their_manifests(upstream: Upstream) -> None:
    big1, big2 = b"a" * 3000, b"b" * 10
    first = upstream.publish("models", "m", big1, segment_size=1024)
    second = upstream.publish("models", "m", big2)  # no manifest
    headers = upstream.auth(upstream.reader)
    base = f"{upstream.url}/v1/resources/models/m"

    current = requests.get(base, headers=headers, timeout=30).json()
    assert current["version"] == second
    assert "segment_size" not in current
    older = requests.get(base, params={"version": first}, headers=headers, timeout=30)
    assert older.status_code == 200
    assert older.json()["version"] == first
    assert older.json()["big_sha256"] == hashlib.sha256(big1).hexdigest()
    assert older.json()["segment_size"] == 1024
    assert "segments" not in older.json()
    blob = requests.get(older.json()["big_url"], timeout=30)
    assert blob.content == big1

    manifest = requests.get(f"{base}/versions/{first}/segments", headers=headers, timeout=30)
    assert manifest.status_code == 200
    assert manifest.headers["content-type"] == "application/octet-stream"
    assert manifest.content == tuf_fixtures.segment_manifest(big1, 1024)
    none = requests.get(f"{base}/versions/{second}/segments", headers=headers, timeout=30)
    assert none.status_code == 404

    for bad in ("0", "-1", "x", "1.0", "99999999999999999999", ""):
        answer = requests.get(base, params={"version": bad}, headers=headers, timeout=30)
        assert answer.status_code == 400, bad
    assert (
        requests.get(base, params={"version": "7"}, headers=headers, timeout=30).status_code == 404
    )
    assert (
        requests.get(f"{base}/versions/x/segments", headers=headers, timeout=30).status_code == 400
    )
    assert requests.get(f"{base}/versions/1/segments", timeout=30).status_code == 401

    done = upstream.admin("resource", "rm", "models", "m", "--version", str(first))
    assert done.returncode == 0, done.stderr
    gone = requests.get(base, params={"version": first}, headers=headers, timeout=30)
    assert gone.status_code == 404
    gone = requests.get(f"{base}/versions/{first}/segments", headers=headers, timeout=30)
    assert gone.status_code == 404


def test_a_repeated_commit_must_repeat_the_manifest(upstream: Upstream) -> None:
    big = bytes(100)
    publishing = Publishing(upstream)
    upload = publishing.begin()
    assert publishing.put(upload, big).ok
    manifest = b64(tuf_fixtures.segment_manifest(big, 10))
    fields = fields_for(big, segment_size=10, segments=manifest)
    assert publishing.commit(upload, **fields).status_code == 200
    assert publishing.commit(upload, **fields).status_code == 200
    other = b64(tuf_fixtures.segment_manifest(b"x" * 100, 10))
    assert publishing.commit(upload, **{**fields, "segments": other}).status_code == 409
    assert publishing.commit(upload, **fields_for(big)).status_code == 409


def test_a_commit_may_carry_a_manifest_of_megabytes(upstream: Upstream) -> None:
    # 2 MiB of manifest (3 MiB of base64): over the 1 MiB of other bodies.
    big = bytes(65536)
    publishing = Publishing(upstream)
    upload = publishing.begin()
    assert publishing.put(upload, big).ok
    manifest = b64(tuf_fixtures.segment_manifest(big, 1))
    answer = publishing.commit(upload, **fields_for(big, segment_size=1, segments=manifest))
    assert answer.status_code == 200, answer.text
    too_big = publishing.commit(upload, **fields_for(big, segments="A" * (4 * 1024 * 1024)))
    assert too_big.status_code == 413
