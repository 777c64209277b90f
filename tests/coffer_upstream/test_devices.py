"""A device's login by proof of key (RFC 7523 JWT bearer, EdDSA), its tokens, its
leases and its revocation, as an attacker would try them.

Every assertion here is signed with PyJWT, as the device side signs them; the
forged ones are made the ways an attacker would: another key under the same
kid, ``alg: none``, HS256 keyed with the public key, a replay, another
audience, an expired or too long-lived one, a subject that is not the kid.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coffer_upstream.db import make_engine
from coffer_upstream.db.session import Transactions
from coffer_upstream.devices import Devices
from fixtures.devices import JWT_BEARER, Device, enrollment_token
from fixtures.upstream import Upstream


def enrolled(upstream: Upstream, role: str = "reader", count: int = 1) -> list[Device]:
    token = enrollment_token(upstream, uses=count, role=role)
    found = []
    for _ in range(count):
        device = Device()
        assert device.enroll(upstream, token.token).status_code == 201
        found.append(device)
    return found


def get_key(upstream: Upstream, token: str) -> requests.Response:
    return requests.get(
        f"{upstream.url}/v1/archives/none/key",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def refused(response: requests.Response, detail: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json() == {"detail": detail}
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="coffer"'


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def hand_signed(header: dict[str, Any], claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWS built by hand: PyJWT refuses to key HMAC with a public key."""
    signed = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    mac = hmac.digest(key, signed.encode(), hashlib.sha256)
    return f"{signed}.{b64url(mac)}"


def test_a_device_logs_in_by_proof_of_key(upstream: Upstream) -> None:
    (device,) = enrolled(upstream)
    answer = device.login(upstream)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    # No refresh token: the device signs again.
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == upstream.token_ttl
    assert get_key(upstream, body["access_token"]).status_code == 404
    # A reader's token may not publish.
    put = requests.put(
        f"{upstream.url}/v1/archives/a1/key",
        json={"key": "A" * 43 + "="},
        headers={"Authorization": f"Bearer {body['access_token']}"},
        timeout=30,
    )
    assert put.status_code == 403
    log = upstream.log_with(f"device:{device.device_id} POST /v1/token 200", "PUT /v1/archives")
    # Nothing secret reaches the log: neither the assertion nor the token.
    assert body["access_token"] not in log
    assert body["access_token"].split(".")[-1] not in log


def test_a_publisher_device_publishes(upstream: Upstream) -> None:
    (device,) = enrolled(upstream, role="publisher")
    put = requests.put(
        f"{upstream.url}/v1/archives/a1/key",
        json={"key": "A" * 43 + "="},
        headers=device.auth(upstream),
        timeout=30,
    )
    assert put.status_code == 201


def test_a_lease_names_the_device(upstream: Upstream) -> None:
    upstream.publish("models", "m.onnx", b"big part")
    (device,) = enrolled(upstream)
    got = requests.get(
        f"{upstream.url}/v1/resources/models/m.onnx", headers=device.auth(upstream), timeout=30
    )
    assert got.status_code == 200
    payload = got.json()["lease"]["payload"]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["sub"] == f"device:{device.device_id}"
    assert claims["device_id"] == device.device_id
    # A human's lease is as before: the email, no device id.
    human = requests.get(
        f"{upstream.url}/v1/resources/models/m.onnx",
        headers=upstream.auth(upstream.reader),
        timeout=30,
    ).json()["lease"]["payload"]
    claims = json.loads(base64.urlsafe_b64decode(human + "=" * (-len(human) % 4)))
    assert claims["sub"] == upstream.reader.email
    assert "device_id" not in claims


def test_another_key_under_the_same_kid_is_refused(upstream: Upstream) -> None:
    (device,) = enrolled(upstream)
    forged = device.assertion(upstream, key=Ed25519PrivateKey.generate())
    refused(device.login(upstream, forged), "bad signature")
    # A signature cut from a genuine assertion onto other claims.
    genuine = device.assertion(upstream).split(".")
    other = device.assertion(upstream).split(".")
    refused(device.login(upstream, f"{other[0]}.{other[1]}.{genuine[2]}"), "bad signature")


def test_alg_none_is_refused(upstream: Upstream) -> None:
    (device,) = enrolled(upstream)
    claims = device.claims(upstream)
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": device.device_id})
    refused(device.login(upstream, unsigned), "assertion must be signed with EdDSA")
    # "none" in another case, and an EdDSA header over an empty signature.
    header = {"alg": "None", "kid": device.device_id}
    sneaky = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."
    assert device.login(upstream, sneaky).status_code == 401
    header = {"alg": "EdDSA", "kid": device.device_id}
    empty = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}."
    assert device.login(upstream, empty).status_code == 401


def test_hs256_keyed_with_the_public_key_is_refused(upstream: Upstream) -> None:
    (device,) = enrolled(upstream)
    claims = device.claims(upstream)
    public = device.key.public_key()
    for secret in [
        base64.b64decode(device.public_key),
        device.public_key.encode(),
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ]:
        for alg in ("HS256", "HS512"):
            forged = hand_signed({"alg": alg, "kid": device.device_id}, claims, secret)
            refused(device.login(upstream, forged), "assertion must be signed with EdDSA")


def test_a_replayed_assertion_is_refused(upstream: Upstream) -> None:
    (device,) = enrolled(upstream)
    assertion = device.assertion(upstream)
    assert device.login(upstream, assertion).status_code == 200
    refused(device.login(upstream, assertion), "assertion replayed")
    # A fresh one passes.
    assert device.login(upstream).status_code == 200
    log = upstream.log_with("POST /v1/token 401", "POST /v1/token 200")
    assert assertion not in log
    assert assertion.split(".")[2] not in log


# Replicas over PostgreSQL (two over one SQLite file: test_replicas.py).
@pytest.mark.databases("postgresql")
def test_a_replay_on_another_replica_is_refused(
    upstream_factory: Callable[..., Upstream], upstream_database: str
) -> None:
    first = upstream_factory()
    second = upstream_factory(database_url=first.database_url, public_url=first.url)
    (device,) = enrolled(first)
    assertion = device.assertion(first)
    assert device.login(first, assertion).status_code == 200
    body = {"grant_type": JWT_BEARER, "assertion": assertion}
    replay = requests.post(f"{second.url}/v1/token", json=body, timeout=30)
    refused(replay, "assertion replayed")


def test_an_assertion_for_another_audience_is_refused(upstream: Upstream) -> None:
    (device,) = enrolled(upstream)
    for aud in [
        "https://elsewhere.example/v1/token",
        f"{upstream.url}/v1/login",
        upstream.url,
        [f"{upstream.url}/v1/tokens"],
    ]:
        refused(
            device.login(upstream, device.assertion(upstream, aud=aud)),
            "assertion for another audience",
        )


def test_an_audience_the_server_is_given_is_accepted(
    upstream_factory: Callable[..., Upstream],
) -> None:
    proxied = "https://coffer.example/v1/token"
    upstream = upstream_factory(extra_args=["--audience", proxied])
    (device,) = enrolled(upstream)
    assert device.login(upstream, device.assertion(upstream, aud=proxied)).status_code == 200
    assert device.login(upstream).status_code == 200


def test_expired_and_long_lived_assertions_are_refused(upstream: Upstream) -> None:
    (device,) = enrolled(upstream)
    now = int(time.time())
    expired = device.assertion(upstream, iat=now - 200, exp=now - 61)
    refused(device.login(upstream, expired), "assertion expired")
    # Within the 60 s of skew allowed, it still passes.
    assert device.login(upstream, device.assertion(upstream, iat=now - 100, exp=now - 30)).ok
    too_long = device.assertion(upstream, iat=now, exp=now + 301)
    refused(device.login(upstream, too_long), "assertion lives longer than 300 s")
    backwards = device.assertion(upstream, iat=now, exp=now)
    refused(device.login(upstream, backwards), "assertion lives longer than 300 s")
    future = device.assertion(upstream, iat=now + 200, exp=now + 400)
    refused(device.login(upstream, future), "assertion issued in the future")


def test_claims_that_do_not_name_the_device_are_refused(upstream: Upstream) -> None:
    first, second = enrolled(upstream, count=2)
    # Signed by the first device, claiming to be the second.
    refused(
        first.login(upstream, first.assertion(upstream, sub=second.device_id)),
        "assertion subject is not its device",
    )
    refused(
        first.login(upstream, first.assertion(upstream, iss=second.device_id)),
        "assertion issuer is not its device",
    )
    # The second's kid over the first's signature.
    refused(
        first.login(upstream, first.assertion(upstream, header={"kid": second.device_id})),
        "bad signature",
    )
    for missing in ("jti", "exp", "iat", "aud", "sub", "iss"):
        claims = first.claims(upstream)
        del claims[missing]
        bare = jwt.encode(claims, first.key, algorithm="EdDSA", headers={"kid": first.device_id})
        assert first.login(upstream, bare).status_code == 401, missing
    refused(
        first.login(upstream, first.assertion(upstream, jti="short")),
        "assertion jti must be 16 to 256 characters",
    )


def test_unknown_devices_and_malformed_assertions_are_refused(upstream: Upstream) -> None:
    device = Device()
    device.device_id = "d_" + "a" * 26
    refused(device.login(upstream), "unknown device")
    device.device_id = "../../etc"
    refused(device.login(upstream), "unknown device")
    for bad in ["", "x", "a.b.c", "e30.e30.", "\u00e9.\u00e9.\u00e9"]:
        assert device.login(upstream, bad).status_code == 401, bad
    for body in [
        {"grant_type": JWT_BEARER},
        {"grant_type": JWT_BEARER, "assertion": 5},
        {"grant_type": JWT_BEARER, "assertion": "x" * 5000},
        {"grant_type": "password", "assertion": "x"},
        {"grant_type": 1},
    ]:
        response = requests.post(f"{upstream.url}/v1/token", json=body, timeout=30)
        assert response.status_code == 400, body


def test_the_refresh_grant_is_named_or_implied(upstream: Upstream) -> None:
    login = requests.post(
        f"{upstream.url}/v1/login",
        json={"email": upstream.reader.email, "password": upstream.reader.password},
        timeout=30,
    ).json()
    for body in [
        {"refresh_token": login["refresh_token"]},
        {"grant_type": "refresh_token", "refresh_token": login["refresh_token"]},
    ]:
        assert requests.post(f"{upstream.url}/v1/token", json=body, timeout=30).ok


def test_a_revoked_device_is_refused_at_once_and_the_others_are_not(upstream: Upstream) -> None:
    first, second = enrolled(upstream, count=2)
    first_token, second_token = first.token(upstream), second.token(upstream)
    kept = first.assertion(upstream)
    done = upstream.admin("device", "revoke", first.device_id)
    assert done.returncode == 0, done.stderr
    # Its access token, a fresh login and an assertion signed before: all refused.
    refused(get_key(upstream, first_token), "device revoked")
    refused(first.login(upstream), "device revoked")
    refused(first.login(upstream, kept), "device revoked")
    # Its key never enrolls again, even with a good token.
    token = enrollment_token(upstream, uses=1)
    refused(first.enroll(upstream, token.token), "device revoked: make a new key to enroll again")
    # The other device, its token and its logins, are untouched.
    assert get_key(upstream, second_token).status_code == 404
    assert second.login(upstream).status_code == 200
    listed = {d["id"]: d for d in json.loads(upstream.admin("device", "ls", "--json").stdout)}
    assert listed[first.device_id]["revoked_at"] is not None
    assert listed[second.device_id]["revoked_at"] is None


def test_last_seen_is_noted(upstream: Upstream) -> None:
    (device,) = enrolled(upstream)
    listed = json.loads(upstream.admin("device", "ls", "--json").stdout)
    assert listed[0]["last_seen_at"] is None
    token = device.token(upstream)
    assert get_key(upstream, token).status_code == 404
    listed = json.loads(upstream.admin("device", "ls", "--json").stdout)
    assert listed[0]["last_seen_at"] is not None


def test_a_device_token_cannot_pass_for_a_user(upstream: Upstream) -> None:
    # A user whose email reads like a device subject gets no device's rights.
    (device,) = enrolled(upstream, role="publisher")
    upstream.add_user(f"device:{device.device_id}@example.com", "pw", "reader")
    token = upstream.login(
        type(upstream.reader)(f"device:{device.device_id}@example.com", "pw", "reader")
    )
    put = requests.put(
        f"{upstream.url}/v1/archives/a1/key",
        json={"key": "A" * 43 + "="},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert put.status_code == 403


def test_used_jtis_are_kept_until_they_expire_then_swept(upstream: Upstream) -> None:
    engine = make_engine(
        upstream.database_url or f"sqlite:///{upstream.data_dir / 'upstream.sqlite3'}"
    )
    try:
        devices = Devices(Transactions(engine))
        now = int(time.time())
        assert devices.use_jti("d_x", "j" * 16, now + 100)
        assert not devices.use_jti("d_x", "j" * 16, now + 100)
        # Another device's jti of the same value is its own.
        assert devices.use_jti("d_y", "j" * 16, now + 100)
        assert devices.forget_expired_jtis(now) == 0
        assert devices.forget_expired_jtis(now + 100) == 2
        assert devices.use_jti("d_x", "j" * 16, now + 200)
    finally:
        engine.dispose()
