"""Interoperability with Google Tink's StreamingAead, both ways, on 1 MiB segments.

The oracle is the ``tink`` package with a keyset holding one
``AesGcmHkdfStreamingKey`` made from the same raw 32-byte key (see conftest).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tink import TinkError
from tink_oracle import TinkOracle

from cofferd.binary_split import stream
from cofferd.binary_split.stream import HEADER_SIZE, SEGMENT_SIZE, TAG_SIZE

FIRST = SEGMENT_SIZE - HEADER_SIZE - TAG_SIZE  # plaintext bytes in the first segment
FULL = SEGMENT_SIZE - TAG_SIZE  # plaintext bytes in every later full segment

SIZES = {
    "empty": 0,
    "one-byte": 1,
    "first-segment-minus-1": FIRST - 1,
    "first-segment": FIRST,
    "first-segment-plus-1": FIRST + 1,
    "one-mib-minus-1": SEGMENT_SIZE - 1,
    "one-mib": SEGMENT_SIZE,
    "one-mib-plus-1": SEGMENT_SIZE + 1,
    "two-full-segments": FIRST + FULL,
    "several-segments": FIRST + 3 * FULL + 12345,
    "five-mib": 5 * SEGMENT_SIZE,
}
AD = stream.resource_associated_data("models", "net.onnx")

Oracle = Callable[[bytes, int], TinkOracle]


@pytest.fixture(scope="module")
def key() -> bytes:
    return stream.new_key()


@pytest.fixture(scope="module")
def tink(tink_oracle: Oracle, key: bytes) -> TinkOracle:
    return tink_oracle(key, SEGMENT_SIZE)


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_tink_decrypts_what_coffer_encrypts(tink: TinkOracle, key: bytes, size: int) -> None:
    plain = os.urandom(size)
    pieces = (plain[i : i + 65536] for i in range(0, size, 65536))
    ct = b"".join(stream.encrypt_chunks(pieces, key, AD))
    assert len(ct) == stream.ciphertext_size(size)
    assert tink.decrypt(ct, AD) == plain


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_coffer_decrypts_what_tink_encrypts(
    tink: TinkOracle, key: bytes, size: int, tmp_path: Path
) -> None:
    plain = os.urandom(size)
    ct = tink.encrypt(plain, AD)
    assert len(ct) == stream.ciphertext_size(size)
    out = io.BytesIO()
    assert stream.decrypt_file(io.BytesIO(ct), out, key, AD) == size
    assert out.getvalue() == plain
    assert b"".join(stream.decrypt_chunks([ct], key, AD, workers=1)) == plain
    # As load reads a cached big part: the small part in memory, the rest from a file.
    big = tmp_path / "big"
    big.write_bytes(ct[4096:])
    out = io.BytesIO()
    with big.open("rb") as f:
        assert stream.decrypt_file(f, out, key, AD, prefix=ct[:4096]) == size
    assert out.getvalue() == plain


def test_tink_refuses_other_associated_data(tink: TinkOracle, key: bytes) -> None:
    # The associated data goes into HKDF: it must be the same bytes on both sides.
    ct = b"".join(stream.encrypt_chunks([b"weights"], key, AD))
    with pytest.raises(TinkError):
        tink.decrypt(ct, stream.resource_associated_data("models", "other.onnx"))
