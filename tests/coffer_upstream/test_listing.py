"""GET /v1/resources/{folder} (the listing) and DELETE /v1/resources/{folder}/{name}."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
import requests

from fixtures.upstream import Upstream


def listing(
    upstream: Upstream, folder: str = "models", token: str | None = None, **query: str
) -> requests.Response:
    token = token or upstream.login(upstream.reader)
    return requests.get(
        f"{upstream.url}/v1/resources/{folder}",
        params=query,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def all_pages(upstream: Upstream, limit: int) -> list[list[dict[str, Any]]]:
    token = upstream.login(upstream.reader)
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    for _ in range(100):  # a bound, in case the cursor never ends
        query = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        response = listing(upstream, token=token, **query)
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"items", "next_cursor"}
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError("the cursor never ended")


def test_listing_pages_through_current_versions_by_name(upstream: Upstream) -> None:
    before = int(time.time())
    names = ["b", "a", "e", "c.onnx", "D-1"]
    for name in names:
        upstream.publish("models", name, name.encode() * 10, plaintext_size=3)
    upstream.publish("models", "c.onnx", b"second version", plaintext_size=5)
    upstream.publish("other", "zzz", b"elsewhere")
    after = int(time.time())

    pages = all_pages(upstream, limit=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    items = [item for page in pages for item in page]
    # By name, byte order: upper case before lower case.
    assert [item["name"] for item in items] == ["D-1", "a", "b", "c.onnx", "e"]
    by_name = {item["name"]: item for item in items}
    assert by_name["c.onnx"] | {"updated_at": 0} == {
        "name": "c.onnx",
        "version": 2,
        "plaintext_size": 5,
        "big_size": len(b"second version"),
        "updated_at": 0,
    }
    assert by_name["a"]["version"] == 1
    assert by_name["a"]["big_size"] == 10
    assert all(before <= item["updated_at"] <= after for item in items)

    whole = listing(upstream).json()
    assert whole == {"items": items, "next_cursor": None}
    assert all_pages(upstream, limit=5) == [items]
    assert all_pages(upstream, limit=4) == [items[:4], items[4:]]


def test_an_empty_folder_lists_nothing(upstream: Upstream) -> None:
    assert listing(upstream, "nothing-here").json() == {"items": [], "next_cursor": None}
    upstream.publish("models", "m", b"x")
    assert listing(upstream, "Models").json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "query",
    [
        {"limit": "0"},
        {"limit": "1001"},
        {"limit": "-1"},
        {"limit": "1.5"},
        {"limit": "ten"},
        {"limit": "٣"},  # an Arabic-Indic digit: isdigit() says yes, the protocol says no
        {"cursor": "not base64!"},
        {"cursor": base64.urlsafe_b64encode(b"..").decode()},
        {"cursor": base64.urlsafe_b64encode(b"\xff\xfe").decode()},
        {"cursor": "A" * 400},
    ],
)
def test_bad_limits_and_cursors_are_400(upstream_module: Upstream, query: dict[str, str]) -> None:
    response = listing(upstream_module, **query)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["detail"], str)


# ".." itself would be resolved by the client before sending: its escaped form is sent as is.
@pytest.mark.parametrize("folder", ["%2E%2E", ".hidden", "-dash", "a%20b", "x" * 129])
def test_bad_folder_names_are_400(upstream_module: Upstream, folder: str) -> None:
    response = requests.get(
        f"{upstream_module.url}/v1/resources/{folder}",
        headers=upstream_module.auth(upstream_module.reader),
        timeout=30,
    )
    assert response.status_code == 400, response.text


def test_listing_needs_a_token_before_anything_else(upstream_module: Upstream) -> None:
    for path in ["/v1/resources/models", "/v1/resources/%2E%2E?limit=0"]:
        response = requests.get(f"{upstream_module.url}{path}", timeout=30)
        assert response.status_code == 401
    assert listing(upstream_module, token=upstream_module.login(upstream_module.publisher)).ok


def test_limit_1000_is_allowed(upstream_module: Upstream) -> None:
    assert listing(upstream_module, limit="1000").status_code == 200


def delete(
    upstream: Upstream, folder: str, name: str, role: str = "publisher"
) -> requests.Response:
    account = upstream.publisher if role == "publisher" else upstream.reader
    return requests.delete(
        f"{upstream.url}/v1/resources/{folder}/{name}",
        headers=upstream.auth(account),
        timeout=30,
    )


def get(upstream: Upstream, folder: str, name: str) -> requests.Response:
    return requests.get(
        f"{upstream.url}/v1/resources/{folder}/{name}",
        headers=upstream.auth(upstream.reader),
        timeout=30,
    )


def test_delete_retires_every_version_and_its_big_parts(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"one")
    upstream.publish("models", "m", b"two")
    upstream.publish("models", "keep", b"kept")
    big_url = get(upstream, "models", "m").json()["big_url"]
    assert len(upstream.blob_paths()) == 3

    response = delete(upstream, "models", "m")
    assert response.status_code == 200, response.text
    assert response.json() == {"folder": "models", "name": "m", "deleted_versions": 2}
    assert get(upstream, "models", "m").status_code == 404
    assert requests.get(big_url, timeout=30).status_code == 404
    assert len(upstream.blob_paths()) == 1
    assert [item["name"] for item in listing(upstream).json()["items"]] == ["keep"]
    assert get(upstream, "models", "keep").status_code == 200
    assert delete(upstream, "models", "m").status_code == 404


def test_a_retired_resource_published_again_never_reuses_a_version(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"one")
    upstream.publish("models", "m", b"two")
    assert delete(upstream, "models", "m").status_code == 200
    # A device may still hold version 2 of the old resource: the new one is 3.
    assert upstream.publish("models", "m", b"new") == 3
    assert get(upstream, "models", "m").json()["version"] == 3
    assert delete(upstream, "models", "m").json()["deleted_versions"] == 1
    upstream.stop()
    upstream.start()
    assert upstream.publish("models", "m", b"newer") == 4


def test_only_publishers_delete_and_checks_keep_their_order(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"one")
    no_token = requests.delete(f"{upstream.url}/v1/resources/models/%2E%2E", timeout=30)
    assert no_token.status_code == 401
    assert delete(upstream, "models", "m", role="reader").status_code == 403
    assert delete(upstream, "models", "%2E%2E", role="reader").status_code == 403
    assert delete(upstream, "models", "%2E%2E").status_code == 400
    assert delete(upstream, "nothing", "m").status_code == 404
    assert get(upstream, "models", "m").status_code == 200
