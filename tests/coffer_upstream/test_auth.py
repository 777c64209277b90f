"""Bearer tokens and roles on every /v1 endpoint."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from fixtures.upstream import Upstream

# What this module tests does not depend on the database: once, on SQLite
# (the modules of stored state run on PostgreSQL too: conftest.py).
DATABASES = ("sqlite",)

KEY = base64.b64encode(bytes(range(32))).decode()

#: (method, path, body) of every authenticated endpoint.
ENDPOINTS = [
    ("GET", "/v1/resources/models/m", None),
    ("POST", "/v1/resources/models/m/uploads", {}),
    ("POST", "/v1/resources/models/m/uploads/0123/commit", {}),
    ("PUT", "/v1/archives/images/key", {"key": KEY}),
    ("GET", "/v1/archives/images/key", None),
]


def call(upstream: Upstream, method: str, path: str, body: object, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return requests.request(method, f"{upstream.url}{path}", json=body, headers=headers, timeout=30)


def forged(token: str, role: str) -> str:
    # Same signature, payload claiming another role.
    version, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = role
    raw = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{version}.{raw}.{sig}"


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer nonsense", "Bearer v1.e30.AAAA"],
)
def test_without_a_valid_token_every_endpoint_is_401(
    upstream_module: Upstream, method: str, path: str, body: object, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = call(upstream_module, method, path, body, headers)
    assert response.status_code == 401
    assert isinstance(response.json()["detail"], str)


def test_a_forged_role_is_401(upstream: Upstream) -> None:
    token = forged(upstream.login(upstream.reader), "publisher")
    response = call(upstream, *ENDPOINTS[1], {"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS[1:4])
def test_readers_may_not_publish(upstream: Upstream, method: str, path: str, body: object) -> None:
    response = call(upstream, method, path, body, upstream.auth(upstream.reader))
    assert response.status_code == 403


def test_readers_may_read_and_publishers_too(upstream: Upstream) -> None:
    upstream.publish("models", "m", b"x")
    for account in (upstream.reader, upstream.publisher):
        headers = upstream.auth(account)
        assert call(upstream, *ENDPOINTS[0], headers).status_code == 200
        assert call(upstream, *ENDPOINTS[4], headers).status_code == 404


def test_the_token_is_checked_before_names(upstream: Upstream) -> None:
    response = call(upstream, "GET", "/v1/resources/..%2F/x", None, {})
    assert response.status_code == 401
