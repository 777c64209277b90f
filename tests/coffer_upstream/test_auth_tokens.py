"""Refresh tokens (extension), and tokens that stop at once: disable, password, role."""

from __future__ import annotations

import requests

from fixtures.upstream import Account, Upstream


def login_body(upstream: Upstream, account: Account) -> dict[str, object]:
    response = requests.post(
        f"{upstream.url}/v1/login",
        json={"email": account.email, "password": account.password},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def refresh(upstream: Upstream, token: object) -> requests.Response:
    return requests.post(f"{upstream.url}/v1/token", json={"refresh_token": token}, timeout=30)


def get_key(upstream: Upstream, token: object) -> int:
    return requests.get(
        f"{upstream.url}/v1/archives/none/key",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).status_code


def test_a_refresh_token_gives_new_access_tokens_without_the_password(upstream: Upstream) -> None:
    body = login_body(upstream, upstream.reader)
    assert body["token_type"] == "bearer"
    assert isinstance(body["refresh_token"], str)
    assert body["refresh_expires_in"] == 30 * 24 * 3600
    for _ in range(3):
        renewed = refresh(upstream, body["refresh_token"])
        assert renewed.status_code == 200
        assert renewed.headers["Cache-Control"] == "no-store"
        assert set(renewed.json()) == {"access_token", "token_type", "expires_in"}
        assert get_key(upstream, renewed.json()["access_token"]) == 404
    # Renewals do not look like logins: no password was checked.
    assert upstream.log().count("POST /v1/token 200") == 3


def test_bad_refresh_tokens_are_refused(upstream: Upstream) -> None:
    body = login_body(upstream, upstream.reader)
    good = str(body["refresh_token"])
    for bad in [good[:-1], good + "x", "", "x" * 300, str(body["access_token"]), "\ud800"]:
        response = refresh(upstream, bad)
        assert response.status_code in (400, 401), bad
        assert isinstance(response.json()["detail"], str)
    for malformed in [{}, {"refresh_token": 1}, []]:
        response = requests.post(f"{upstream.url}/v1/token", json=malformed, timeout=30)
        assert response.status_code == 400


def test_a_disabled_user_is_refused_at_once_and_enabled_again(upstream: Upstream) -> None:
    body = login_body(upstream, upstream.reader)
    assert get_key(upstream, body["access_token"]) == 404
    done = upstream.admin("user", "disable", upstream.reader.email.upper())
    assert done.returncode == 0, done.stderr
    # The access token and the refresh token stop, and so does the password.
    assert get_key(upstream, body["access_token"]) == 401
    assert refresh(upstream, body["refresh_token"]).status_code == 401
    denied = requests.post(
        f"{upstream.url}/v1/login",
        json={"email": upstream.reader.email, "password": upstream.reader.password},
        timeout=30,
    )
    assert denied.status_code == 401
    assert upstream.admin("user", "enable", upstream.reader.email).returncode == 0
    # Tokens from before the disable stay dead; a new login works.
    assert get_key(upstream, body["access_token"]) == 401
    assert get_key(upstream, login_body(upstream, upstream.reader)["access_token"]) == 404


def test_a_new_password_ends_the_old_tokens(upstream: Upstream) -> None:
    body = login_body(upstream, upstream.reader)
    done = upstream.admin("user", "passwd", upstream.reader.email, stdin="new password\n")
    assert done.returncode == 0, done.stderr
    assert get_key(upstream, body["access_token"]) == 401
    assert refresh(upstream, body["refresh_token"]).status_code == 401
    fresh = login_body(upstream, Account(upstream.reader.email, "new password", "reader"))
    assert get_key(upstream, fresh["access_token"]) == 404


def test_a_role_change_holds_at_once(upstream: Upstream) -> None:
    token = login_body(upstream, upstream.publisher)["access_token"]
    url = f"{upstream.url}/v1/archives/a1/key"
    headers = {"Authorization": f"Bearer {token}"}
    key = {"key": "A" * 43 + "="}
    assert requests.put(url, json=key, headers=headers, timeout=30).status_code == 201
    assert upstream.admin("user", "role", upstream.publisher.email, "reader").returncode == 0
    assert requests.put(url, json=key, headers=headers, timeout=30).status_code == 403
