"""Sealed records: they open with the device key only, for their own resource only."""

from __future__ import annotations

import secrets

import pytest

from cofferd.field.sealing import RecordUnreadable, Sealer


def test_round_trip_and_fresh_nonces() -> None:
    sealer = Sealer(secrets.token_bytes(32))
    a = sealer.seal("models", "m.bin", b"secret record")
    assert sealer.unseal("models", "m.bin", a) == b"secret record"
    assert a != sealer.seal("models", "m.bin", b"secret record")
    assert b"secret" not in a


def test_tampered_foreign_or_moved_records_do_not_open() -> None:
    key = secrets.token_bytes(32)
    sealed = Sealer(key).seal("models", "m.bin", b"record")
    flipped = bytearray(sealed)
    flipped[-5] ^= 0x40
    with pytest.raises(RecordUnreadable, match="does not open"):
        Sealer(key).unseal("models", "m.bin", bytes(flipped))
    with pytest.raises(RecordUnreadable, match="does not open"):
        Sealer(secrets.token_bytes(32)).unseal("models", "m.bin", sealed)
    with pytest.raises(RecordUnreadable, match="does not open"):
        Sealer(key).unseal("models", "other.bin", sealed)
    with pytest.raises(RecordUnreadable, match="not a sealed record"):
        Sealer(key).unseal("models", "m.bin", sealed[:10])


def test_repr_hides_the_key() -> None:
    key = secrets.token_bytes(32)
    assert key.hex() not in repr(Sealer(key))
