"""The big/small split: load joins the parts back; neither decrypts alone or mismatched."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from cofferd.binary_split import split, stream
from cofferd.binary_split.stream import HEADER_SIZE, SEGMENT_SIZE
from cofferd.errors import DecryptionError

AD_A = stream.resource_associated_data("models", "a.bin")
AD_B = stream.resource_associated_data("models", "b.bin")
PLAIN = os.urandom(2 * SEGMENT_SIZE + 999)


def decrypt(chunks: Iterator[bytes] | list[bytes], key: bytes, ad: bytes) -> bytes:
    return b"".join(stream.decrypt_chunks(chunks, key, ad))


@pytest.fixture(scope="module")
def resource() -> tuple[bytes, bytes]:
    key = stream.new_key()
    return key, b"".join(stream.encrypt_chunks([PLAIN], key, AD_A))


@pytest.mark.parametrize(
    "small_size", [HEADER_SIZE, 41, split.DEFAULT_SMALL_SIZE, SEGMENT_SIZE + 3]
)
def test_joined_parts_decrypt(resource: tuple[bytes, bytes], small_size: int) -> None:
    key, _ = resource
    small, big = split.split(stream.encrypt_chunks([PLAIN], key, AD_A), small_size)
    big_chunks = list(big)
    assert len(small) == small_size
    assert small[0] == HEADER_SIZE
    # As load joins them: the small part is the prefix of the big part's file.
    out = io.BytesIO()
    big_file = io.BytesIO(b"".join(big_chunks))
    assert stream.decrypt_file(big_file, out, key, AD_A, prefix=small) == len(PLAIN)
    assert out.getvalue() == PLAIN
    assert len(small) + sum(map(len, big_chunks)) == stream.ciphertext_size(len(PLAIN))


def test_split_streams_the_big_part() -> None:
    pulled = []

    def source() -> Iterator[bytes]:
        for i in range(100):
            pulled.append(i)
            yield bytes(1000)

    small, big = split.split(source(), 2500)
    assert (len(small), pulled) == (2500, [0, 1, 2])
    assert next(big) == bytes(500)
    assert len(pulled) == 3  # nothing more read until asked
    assert sum(map(len, big)) == 100_000 - 3000


def test_a_short_ciphertext_lives_in_the_small_part() -> None:
    key = stream.new_key()
    small, big = split.split(stream.encrypt_chunks([b"tiny"], key, AD_A))
    assert list(big) == []
    assert decrypt([small], key, AD_A) == b"tiny"


def test_either_part_alone_does_not_decrypt(resource: tuple[bytes, bytes]) -> None:
    key, ct = resource
    small, big = split.split([ct])
    big_bytes = b"".join(big)
    with pytest.raises(DecryptionError):
        decrypt([small], key, AD_A)
    with pytest.raises(DecryptionError):
        decrypt([big_bytes], key, AD_A)
    # Not even with a well-formed header in front: the salt is what it lacks.
    fake_header = bytes([HEADER_SIZE]) + os.urandom(HEADER_SIZE - 1)
    released: list[bytes] = []
    with pytest.raises(DecryptionError):
        released.extend(stream.decrypt_chunks([fake_header + big_bytes], key, AD_A))
    assert released == []


def test_a_big_part_with_another_resources_small_part_does_not_decrypt(
    resource: tuple[bytes, bytes],
) -> None:
    key, ct = resource
    _, big = split.split([ct])
    big_a = b"".join(big)
    # The same plaintext and key, encrypted again (a new salt), and another resource.
    for other_key, ad in [(key, AD_A), (key, AD_B), (stream.new_key(), AD_B)]:
        small_b, _ = split.split(stream.encrypt_chunks([PLAIN], other_key, ad))
        for try_key in {key, other_key}:
            released: list[bytes] = []
            with pytest.raises(DecryptionError):
                released.extend(stream.decrypt_chunks([small_b, big_a], try_key, ad))
            assert released == []


@pytest.mark.parametrize(
    ("size", "error"), [(HEADER_SIZE - 1, ValueError), (0, ValueError), ("40", TypeError)]
)
def test_a_small_part_smaller_than_the_header_is_a_caller_mistake(
    size: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match="small_size"):
        split.split([bytes(100)], size)  # type: ignore[arg-type]


def test_a_ciphertext_shorter_than_a_header_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="header"):
        split.split([bytes(HEADER_SIZE - 1)])


def test_the_default_small_part_keeps_the_header() -> None:
    assert split.DEFAULT_SMALL_SIZE >= HEADER_SIZE
