"""The pure parts of the reference upstream, with time and input injected."""

from __future__ import annotations

import asyncio

import pytest

from coffer_upstream.errors import HttpError
from coffer_upstream.hashing import Busy, PasswordPool
from coffer_upstream.passwords import DUMMY_HASH, hash_password, verify_password
from coffer_upstream.signing import Signer

SECRET = bytes(range(32))


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# Tokens and URL signatures


def test_token_round_trip_and_expiry() -> None:
    clock = Clock()
    signer = Signer(SECRET, clock)
    token = signer.issue_token("a@b.c", "reader", 60)
    claims = signer.check_token(token)
    assert (claims.email, claims.role, claims.expires) == ("a@b.c", "reader", 1_000_060)
    assert claims.epoch == 0
    assert signer.check_token(signer.issue_token("a@b.c", "reader", 60, epoch=3)).epoch == 3
    clock.now += 60
    with pytest.raises(HttpError) as expired:
        signer.check_token(token)
    assert (expired.value.status, expired.value.detail) == (401, "token expired")


def test_a_token_of_another_secret_or_altered_is_invalid() -> None:
    token = Signer(bytes(32)).issue_token("a@b.c", "publisher", 60)
    signer = Signer(SECRET)
    good = signer.issue_token("a@b.c", "reader", 60)
    for bad in [token, good[:-2], good + "A", good.replace("v1.", "v2."), "", "a.b.c", "é" * 10]:
        with pytest.raises(HttpError) as refused:
            signer.check_token(bad)
        assert refused.value.status == 401


def test_url_signatures_bind_method_blob_and_expiry() -> None:
    clock = Clock()
    signer = Signer(SECRET, clock)
    query = dict(part.split("=") for part in signer.url_query("GET", "a" * 32, 10).split("&"))
    signer.check_url("GET", "a" * 32, query["expires"], query["sig"])
    for method, blob, expires in [
        ("PUT", "a" * 32, query["expires"]),
        ("GET", "b" * 32, query["expires"]),
        ("GET", "a" * 32, str(int(query["expires"]) + 1)),
    ]:
        with pytest.raises(HttpError) as refused:
            signer.check_url(method, blob, expires, query["sig"])
        assert refused.value.status == 403
    clock.now += 10
    with pytest.raises(HttpError, match="expired"):
        signer.check_url("GET", "a" * 32, query["expires"], query["sig"])


# Passwords


def test_password_hashes_verify_and_differ_by_salt() -> None:
    first, second = hash_password("pw"), hash_password("pw")
    assert first != second
    assert verify_password("pw", first)
    assert verify_password("pw", second)
    assert not verify_password("pW", first)
    assert not verify_password("pw", DUMMY_HASH)
    assert not verify_password("", DUMMY_HASH)
    for broken in ["", "scrypt$1$2", "md5$16384$8$1$AA==$AA==", first.replace("$8$", "$x$")]:
        assert not verify_password("pw", broken)


def test_the_password_pool_refuses_past_its_queue() -> None:
    pool = PasswordPool(workers=1, queue=2)
    stored = hash_password("pw")

    async def storm() -> list[object]:
        return await asyncio.gather(
            *(pool.verify("pw", stored) for _ in range(6)), return_exceptions=True
        )

    try:
        results = asyncio.run(storm())
    finally:
        pool.close()
    # One hashing and two waiting at most: the other three refused at once.
    assert results.count(True) == 3
    assert sum(isinstance(r, Busy) for r in results) == 3
