"""POST /v1/devices: enrolling a device's key with an enrollment token, as an attacker would try it.

A token is a secret: unknown, spent, expired or revoked all get the one 401.
Its uses count down in one UPDATE, so concurrent enrollments never spend a
use twice; the same key enrolling again gets its id back and spends nothing.
"""

from __future__ import annotations

import base64
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from fixtures.devices import Device, enrollment_token
from fixtures.upstream import Upstream

REFUSED = "enrollment token unknown, spent or expired"


def enroll_raw(upstream: Upstream, body: Any) -> requests.Response:
    return requests.post(f"{upstream.url}/v1/devices", json=body, timeout=30)


def tokens(upstream: Upstream) -> dict[str, dict[str, Any]]:
    done = upstream.admin("enroll-token", "ls", "--json")
    assert done.returncode == 0, done.stderr
    return {t["id"]: t for t in json.loads(done.stdout)}


def devices(upstream: Upstream) -> dict[str, dict[str, Any]]:
    done = upstream.admin("device", "ls", "--json")
    assert done.returncode == 0, done.stderr
    return {d["id"]: d for d in json.loads(done.stdout)}


def test_a_device_enrolls_and_again_gets_its_id_back(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=2, role="reader")
    device = Device()
    first = device.enroll(upstream, token.token, name="edge-01")
    assert first.status_code == 201, first.text
    assert first.headers["Cache-Control"] == "no-store"
    assert first.json() == {"device_id": device.device_id, "role": "reader"}
    assert re.fullmatch(r"d_[a-z2-7]{26}", device.device_id)
    # Idempotent: the same id, and no use spent.
    again = device.enroll(upstream, token.token)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert tokens(upstream)[token.id]["uses_left"] == 1
    listed = devices(upstream)[device.device_id]
    assert listed["name"] == "edge-01"
    assert listed["public_key"] == device.public_key
    assert listed["role"] == "reader"
    assert listed["enrolled_with"] == token.id
    assert listed["revoked_at"] is None


def test_a_lost_answer_is_retried_with_the_token_its_enrollment_spent(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=1)
    device = Device()
    assert device.enroll(upstream, token.token).status_code == 201
    assert tokens(upstream)[token.id]["state"] == "spent"
    again = device.enroll(upstream, token.token)
    assert again.status_code == 200
    assert again.json()["device_id"] == device.device_id
    # Another key gets nothing from the spent token.
    other = Device().enroll(upstream, token.token)
    assert other.status_code == 401
    assert other.json() == {"detail": REFUSED}


def test_a_spent_token_is_refused(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=2)
    assert Device().enroll(upstream, token.token).status_code == 201
    assert Device().enroll(upstream, token.token).status_code == 201
    third = Device().enroll(upstream, token.token)
    assert third.status_code == 401
    assert third.json() == {"detail": REFUSED}
    assert third.headers["WWW-Authenticate"] == 'Bearer realm="coffer"'
    assert len(devices(upstream)) == 2


def test_an_expired_token_is_refused(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=5, expires="1s")
    time.sleep(2.1)
    refused = Device().enroll(upstream, token.token)
    assert refused.status_code == 401
    assert refused.json() == {"detail": REFUSED}
    assert tokens(upstream)[token.id]["state"] == "expired"
    assert devices(upstream) == {}


def test_a_revoked_token_is_refused(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=5)
    done = upstream.admin("enroll-token", "revoke", token.id)
    assert done.returncode == 0, done.stderr
    refused = Device().enroll(upstream, token.token)
    assert refused.status_code == 401
    assert refused.json() == {"detail": REFUSED}
    assert tokens(upstream)[token.id]["state"] == "revoked"


@pytest.mark.parametrize(
    "guess",
    [
        "cet_" + "A" * 43,
        "cet_short",
        "",
        "x" * 256,
        "a-publisher-password",
    ],
)
def test_unknown_and_malformed_tokens_get_the_one_answer(
    upstream_module: Upstream, guess: str
) -> None:
    refused = Device().enroll(upstream_module, guess)
    assert refused.status_code == 401
    assert refused.json() == {"detail": REFUSED}


def test_a_token_differing_in_one_character_is_refused(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=5).token
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert Device().enroll(upstream, flipped).status_code == 401
    assert Device().enroll(upstream, token).status_code == 201


def test_bad_bodies_are_400(upstream_module: Upstream) -> None:
    token = "cet_" + "A" * 43
    good_key = Device().public_key
    short_key = base64.b64encode(bytes(31)).decode()
    for body in [
        [],
        {},
        {"enrollment_token": token},
        {"public_key": good_key},
        {"enrollment_token": 1, "public_key": good_key},
        {"enrollment_token": token, "public_key": "not base64!"},
        {"enrollment_token": token, "public_key": short_key},
        {"enrollment_token": token, "public_key": good_key.rstrip("=")},
        {"enrollment_token": token, "public_key": good_key, "name": ""},
        {"enrollment_token": token, "public_key": good_key, "name": "x" * 129},
        {"enrollment_token": token, "public_key": good_key, "name": "a\nb"},
        {"enrollment_token": token, "public_key": good_key, "name": 7},
        {"enrollment_token": "\ud800", "public_key": good_key},
    ]:
        response = enroll_raw(upstream_module, body)
        assert response.status_code == 400, (body, response.text)
        assert isinstance(response.json()["detail"], str)


def test_concurrent_enrollments_never_spend_a_use_twice(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=5)
    keys = [Device() for _ in range(16)]
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda d: d.enroll(upstream, token.token).status_code, keys))
    assert sorted(statuses) == [201] * 5 + [401] * 11
    assert tokens(upstream)[token.id]["uses_left"] == 0
    assert len(devices(upstream)) == 5


def test_the_same_key_enrolling_at_once_gets_one_id(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=10)
    device = Device()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: device.enroll(upstream, token.token), range(8)))
    assert all(a.status_code in (200, 201) for a in answers), [a.text for a in answers]
    assert len({a.json()["device_id"] for a in answers}) == 1
    assert [a.status_code for a in answers].count(201) == 1
    assert tokens(upstream)[token.id]["uses_left"] == 9


def test_a_token_gives_its_role(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=1, role="publisher")
    answer = Device().enroll(upstream, token.token)
    assert answer.json()["role"] == "publisher"


def test_no_enrollment_token_reaches_the_log(upstream: Upstream) -> None:
    token = enrollment_token(upstream, uses=1)
    Device().enroll(upstream, token.token)
    Device().enroll(upstream, token.token)
    log = upstream.log_with("POST /v1/devices 201", "POST /v1/devices 401")
    assert token.token not in log
    assert token.token[4:20] not in log
