"""GET /v1/resources/... and the two-phase publish: begin, PUT the big part, commit."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests

from fixtures.upstream import Upstream


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class Publishing:
    """The three steps of a publish, each callable alone."""

    def __init__(self, upstream: Upstream, folder: str = "models", name: str = "m") -> None:
        self.upstream = upstream
        self.base = f"{upstream.url}/v1/resources/{folder}/{name}"
        self.headers = upstream.auth(upstream.publisher)

    def begin(self) -> dict[str, Any]:
        response = requests.post(f"{self.base}/uploads", json={}, headers=self.headers, timeout=30)
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def put(self, upload: dict[str, Any], big: bytes) -> requests.Response:
        return requests.put(upload["big_url"], data=big, timeout=60)

    def commit(self, upload: dict[str, Any], **fields: Any) -> requests.Response:
        return requests.post(
            f"{self.base}/uploads/{upload['upload_id']}/commit",
            json=fields,
            headers=self.headers,
            timeout=30,
        )


def fields_for(big: bytes, **overrides: Any) -> dict[str, Any]:
    fields = {
        "small": b64(b"s" * 40),
        "key": b64(bytes(range(32))),
        "big_size": len(big),
        "big_sha256": hashlib.sha256(big).hexdigest(),
        "plaintext_size": 7,
    }
    fields.update(overrides)
    return fields


def get(upstream: Upstream, folder: str = "models", name: str = "m") -> requests.Response:
    return requests.get(
        f"{upstream.url}/v1/resources/{folder}/{name}",
        headers=upstream.auth(upstream.reader),
        timeout=30,
    )


def test_publish_then_get_round_trips_every_field(upstream: Upstream) -> None:
    publishing = Publishing(upstream)
    big = os.urandom(100_000)
    upload = publishing.begin()
    assert upload["expires_in"] == upstream.upload_ttl
    assert upload["big_url"].startswith(f"{upstream.url}/cdn/")
    put = publishing.put(upload, big)
    assert put.status_code == 201
    assert put.json() == {"size": len(big), "sha256": hashlib.sha256(big).hexdigest()}
    fields = fields_for(big)
    commit = publishing.commit(upload, **fields)
    assert commit.status_code == 200
    assert commit.json() == {"folder": "models", "name": "m", "version": 1}

    response = get(upstream)
    assert response.status_code == 200
    body = response.json()
    big_url = body.pop("big_url")
    assert set(body.pop("lease")) == {"payload", "signature", "key_id"}  # test_leases.py
    assert body == {"folder": "models", "name": "m", "version": 1, **fields}
    assert big_url.startswith(f"{upstream.url}/cdn/")
    assert requests.get(big_url, timeout=30).content == big


def test_versions_count_up_and_get_answers_the_newest(upstream: Upstream) -> None:
    assert upstream.publish("models", "m", b"one") == 1
    assert upstream.publish("models", "m", b"two") == 2
    assert upstream.publish("models", "other", b"three") == 1
    body = get(upstream).json()
    assert body["version"] == 2
    assert requests.get(body["big_url"], timeout=30).content == b"two"


def test_empty_big_part(upstream: Upstream) -> None:
    assert upstream.publish("models", "empty", b"") == 1
    body = get(upstream, name="empty").json()
    assert body["big_size"] == 0
    response = requests.get(body["big_url"], timeout=30)
    assert response.status_code == 200
    assert response.content == b""


def test_public_url_is_the_base_of_cdn_urls(upstream_factory: Callable[..., Upstream]) -> None:
    upstream = upstream_factory(public_url="http://cdn.invalid:1234/")
    upload = Publishing(upstream).begin()
    assert upload["big_url"].startswith("http://cdn.invalid:1234/cdn/")


def test_unknown_resource_is_404(upstream: Upstream) -> None:
    response = get(upstream, "models", "never")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_nothing_is_visible_before_commit(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"old")
    publishing = Publishing(upstream)
    upload = publishing.begin()
    assert publishing.put(upload, b"new").status_code == 201
    body = get(upstream).json()
    assert body["version"] == 1
    assert requests.get(body["big_url"], timeout=30).content == b"old"
    assert get(upstream, name="fresh").status_code == 404


@pytest.mark.parametrize(
    "override",
    [
        {"big_size": 4},
        {"big_sha256": hashlib.sha256(b"other").hexdigest()},
    ],
)
def test_a_commit_that_does_not_match_the_big_part_is_409(
    upstream: Upstream, override: dict[str, Any]
) -> None:
    upstream.publish("models", "m", b"old")
    publishing = Publishing(upstream)
    upload = publishing.begin()
    publishing.put(upload, b"new")
    response = publishing.commit(upload, **fields_for(b"new", **override))
    assert response.status_code == 409
    assert get(upstream).json()["version"] == 1
    # The upload lives on: a right commit still works.
    assert publishing.commit(upload, **fields_for(b"new")).json()["version"] == 2


def test_commit_without_a_big_part_is_409(upstream: Upstream) -> None:
    publishing = Publishing(upstream)
    upload = publishing.begin()
    assert publishing.commit(upload, **fields_for(b"")).status_code == 409
    assert get(upstream).status_code == 404


def test_commit_checks_the_big_part_as_it_is_on_disk(upstream: Upstream) -> None:
    publishing = Publishing(upstream)
    upload = publishing.begin()
    publishing.put(upload, b"what was sent")
    (blob,) = upstream.blob_paths()
    blob.write_bytes(b"what is there")
    assert publishing.commit(upload, **fields_for(b"what was sent")).status_code == 409
    assert publishing.commit(upload, **fields_for(b"what is there")).status_code == 200


def test_a_second_put_replaces_the_first(upstream: Upstream) -> None:
    publishing = Publishing(upstream)
    upload = publishing.begin()
    publishing.put(upload, b"first try")
    assert publishing.put(upload, b"second").status_code == 201
    assert publishing.commit(upload, **fields_for(b"second")).status_code == 200
    assert len(upstream.blob_paths()) == 1


def test_a_committed_big_part_cannot_change(upstream: Upstream) -> None:
    publishing = Publishing(upstream)
    upload = publishing.begin()
    publishing.put(upload, b"big")
    publishing.commit(upload, **fields_for(b"big"))
    assert publishing.put(upload, b"evil").status_code == 409
    assert requests.get(get(upstream).json()["big_url"], timeout=30).content == b"big"


def test_a_repeated_commit_gets_the_same_answer(upstream: Upstream) -> None:
    publishing = Publishing(upstream)
    upload = publishing.begin()
    publishing.put(upload, b"big")
    first = publishing.commit(upload, **fields_for(b"big"))
    again = publishing.commit(upload, **fields_for(b"big"))
    assert first.json() == again.json() == {"folder": "models", "name": "m", "version": 1}
    other = publishing.commit(upload, **fields_for(b"big", plaintext_size=8))
    assert other.status_code == 409
    assert get(upstream).json()["version"] == 1


def test_unknown_upload_or_one_of_another_resource_is_404(upstream: Upstream) -> None:
    publishing = Publishing(upstream)
    assert publishing.commit({"upload_id": "0" * 32}, **fields_for(b"")).status_code == 404
    assert publishing.commit({"upload_id": "..%2Fx"}, **fields_for(b"")).status_code == 404
    upload = publishing.begin()
    publishing.put(upload, b"big")
    elsewhere = Publishing(upstream, "models", "other")
    assert elsewhere.commit(upload, **fields_for(b"big")).status_code == 404
    assert get(upstream, name="other").status_code == 404


def test_an_expired_upload_is_404_and_its_files_go(
    upstream_factory: Callable[..., Upstream],
) -> None:
    # Lifetimes count from the start of the second: 2 s are more than 1 s and at most 2.
    upstream = upstream_factory(upload_ttl=2)
    publishing = Publishing(upstream)
    upload = publishing.begin()
    assert publishing.put(upload, b"big").status_code == 201
    assert len(upstream.blob_paths()) == 1
    time.sleep(2.1)
    assert publishing.commit(upload, **fields_for(b"big")).status_code == 404
    assert publishing.put(upload, b"big").status_code == 403  # its URL expired with it
    deadline = time.monotonic() + 10
    while upstream.blob_paths() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert upstream.blob_paths() == []
    assert upstream.temp_paths() == []
    assert get(upstream).status_code == 404


def test_expired_uploads_are_swept_on_start(upstream_factory: Callable[..., Upstream]) -> None:
    upstream = upstream_factory(upload_ttl=2)
    publishing = Publishing(upstream)
    assert publishing.put(publishing.begin(), b"big").status_code == 201
    upstream.stop()
    debris = upstream.data_dir / "tmp" / f"{'a' * 32}.0123.part"
    debris.write_bytes(b"debris")
    # Left by a PUT that died long ago (a live one keeps writing its file).
    os.utime(debris, (time.time() - 3600, time.time() - 3600))
    time.sleep(2.1)
    upstream.start()
    assert upstream.blob_paths() == []
    assert upstream.temp_paths() == []


def test_concurrent_uploads_of_one_resource_get_distinct_versions(upstream: Upstream) -> None:
    versions: list[int] = []
    errors: list[BaseException] = []

    def publish(i: int) -> None:
        try:
            versions.append(upstream.publish("models", "m", f"part {i}".encode()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(versions) == [1, 2, 3, 4, 5, 6]
    assert get(upstream).json()["version"] == 6


# requests removes literal dot segments; the raw ones are in test_bad_input.
BAD_NAMES = [
    "%2E",
    "%2E%2E",
    ".hidden",
    "-dash",
    "a b",
    "a%00b",
    "a%0Ab",
    "%C3%A9",
    "a" * 129,
    "a%2Fb",
]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_400(upstream_module: Upstream, bad: str) -> None:
    reader = upstream_module.auth(upstream_module.reader)
    publisher = upstream_module.auth(upstream_module.publisher)
    url = upstream_module.url
    calls = [
        ("GET", f"/v1/resources/{bad}/m", reader, None),
        ("GET", f"/v1/resources/models/{bad}", reader, None),
        ("POST", f"/v1/resources/{bad}/m/uploads", publisher, {}),
        ("POST", f"/v1/resources/models/{bad}/uploads/{'0' * 32}/commit", publisher, {}),
        ("PUT", f"/v1/archives/{bad}/key", publisher, {"key": b64(bytes(32))}),
        ("GET", f"/v1/archives/{bad}/key", reader, None),
    ]
    for method, path, headers, body in calls:
        response = requests.request(method, url + path, headers=headers, json=body, timeout=30)
        assert response.status_code == 400, (method, path, response.text)
        assert "must be" in response.json()["detail"]


def test_names_at_the_edges_of_the_rule_are_fine(upstream: Upstream) -> None:
    for folder, name in [("a", "Z"), ("0", "a.b_c-d"), ("x" * 128, "9..")]:
        assert upstream.publish(folder, name, b"ok") == 1
        assert get(upstream, folder, name).status_code == 200


def test_a_put_still_running_when_its_upload_expires_leaves_nothing(
    upstream_factory: Callable[..., Upstream],
) -> None:
    upstream = upstream_factory(upload_ttl=2)
    publishing = Publishing(upstream)
    upload = publishing.begin()

    def slow_body():  # type: ignore[no-untyped-def]
        yield b"first half"
        time.sleep(2.5)
        yield b"second half"

    response = requests.put(upload["big_url"], data=slow_body(), timeout=30)
    assert response.status_code == 404
    assert upstream.blob_paths() == []
    assert upstream.temp_paths() == []
    assert publishing.commit(upload, **fields_for(b"first halfsecond half")).status_code == 404
