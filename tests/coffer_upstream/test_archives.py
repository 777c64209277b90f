"""PUT/GET /v1/archives/{archive_id}/key: register once, read back, never change."""

from __future__ import annotations

import base64

import pytest
import requests

from fixtures.upstream import Upstream

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def put(upstream: Upstream, archive_id: str, body: object) -> requests.Response:
    return requests.put(
        f"{upstream.url}/v1/archives/{archive_id}/key",
        json=body,
        headers=upstream.auth(upstream.publisher),
        timeout=30,
    )


def get(upstream: Upstream, archive_id: str) -> requests.Response:
    return requests.get(
        f"{upstream.url}/v1/archives/{archive_id}/key",
        headers=upstream.auth(upstream.reader),
        timeout=30,
    )


def test_create_same_conflict_get(upstream: Upstream) -> None:
    created = put(upstream, "images-1", {"key": b64(KEY)})
    assert created.status_code == 201
    assert created.json() == {"archive_id": "images-1"}
    same = put(upstream, "images-1", {"key": b64(KEY)})
    assert same.status_code == 200
    conflict = put(upstream, "images-1", {"key": b64(OTHER)})
    assert conflict.status_code == 409
    assert b64(OTHER) not in conflict.text
    assert b64(KEY) not in conflict.text
    got = get(upstream, "images-1")
    assert got.status_code == 200
    assert got.json() == {"archive_id": "images-1", "key": b64(KEY)}
    assert got.headers["Cache-Control"] == "no-store"


def test_unknown_archive_is_404(upstream: Upstream) -> None:
    put(upstream, "images-1", {"key": b64(KEY)})
    assert get(upstream, "images-2").status_code == 404
    assert get(upstream, "Images-1").status_code == 404  # names are case-sensitive


def test_keys_survive_a_restart(upstream: Upstream) -> None:
    put(upstream, "images-1", {"key": b64(KEY)})
    upstream.stop()
    upstream.start()
    assert get(upstream, "images-1").json()["key"] == b64(KEY)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"key": None},
        {"key": 12},
        {"key": b64(bytes(31))},
        {"key": b64(bytes(33))},
        {"key": b64(KEY)[:-1]},
        {"key": b64(KEY).replace("A", "*")},
        {"key": " " + b64(KEY)},
        {"key": base64.urlsafe_b64encode(b"\xff" * 32).decode()},
        {"key": "é" * 44},
        [b64(KEY)],
    ],
)
def test_bad_keys_are_400_and_register_nothing(upstream_module: Upstream, body: object) -> None:
    response = put(upstream_module, "bad-keys", body)
    assert response.status_code == 400
    assert get(upstream_module, "bad-keys").status_code == 404
