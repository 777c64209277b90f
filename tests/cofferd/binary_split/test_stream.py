"""The format's API: known answers, round trips at the boundaries, pipes, caller mistakes."""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator

import pytest

from cofferd.binary_split import pipeline, segment, stream
from cofferd.binary_split.stream import HEADER_SIZE, KEY_SIZE, SEGMENT_SIZE, TAG_SIZE
from cofferd.errors import BadName, DecryptionError

KAT_KEY = bytes(range(32))
KAT_AD = b"coffer/v1/resource/models/kat.bin"
# Written by the tink package (1.16): (segment size, plaintext, ciphertext).
KAT = [
    (
        64,
        b"a known answer, in two segments",
        "289b782fe006a73ae262c807145a697588d816f9eecfdf0fef5cdeaf8e1826f683ab68ac8c837d52"
        "2c3d0544e507ec499cd25a109d4243ebbb11e30df78fe62abf6a91ba584d8a0af567507577c1d254"
        "534acbd9a5fd378247b7cc43999a66408b89e5fd237efb",
    ),
    (
        SEGMENT_SIZE,
        b"",
        "28e295133d3cf7231c2cc5787e2ed5b3ea980a11c4ec291cfb945f1a23708aec23ee0873574c8c11"
        "f047660687cd4643cca277a01f8cbc2f",
    ),
    (
        SEGMENT_SIZE,
        b"coffer",
        "28707723e93bb0eeb817b0371db896f9130f9178d19c7c96d8008f49e22ae4d6479a8ce196daf242"
        "484393ac4fc9950ed528eaf1d1fcc3f7ec170797e568",
    ),
]


@pytest.mark.parametrize(("seg", "plain", "hex_ct"), KAT)
def test_known_answers_decrypt(seg: int, plain: bytes, hex_ct: str) -> None:
    ct = bytes.fromhex(hex_ct)
    assert b"".join(stream.decrypt_chunks([ct], KAT_KEY, KAT_AD, segment_size=seg)) == plain


@pytest.mark.parametrize(("seg", "plain", "hex_ct"), KAT)
def test_known_answers_encrypt_byte_for_byte(seg: int, plain: bytes, hex_ct: str) -> None:
    ct = bytes.fromhex(hex_ct)
    header = ct[1 : 1 + KEY_SIZE], ct[1 + KEY_SIZE : HEADER_SIZE]
    read = pipeline.chunk_reader([plain[:5], plain[5:]])
    views = stream._encrypt(read, KAT_KEY, KAT_AD, seg, 1, header=header)
    assert b"".join(bytes(v) for v in views) == ct


def test_salt_and_nonce_prefix_are_fresh_each_time() -> None:
    key = stream.new_key()
    a = b"".join(stream.encrypt_chunks([b"same"], key, b"ad"))
    b = b"".join(stream.encrypt_chunks([b"same"], key, b"ad"))
    assert a[0] == b[0] == HEADER_SIZE
    assert a[1:HEADER_SIZE] != b[1:HEADER_SIZE]
    assert a != b


def test_new_key_is_random_and_32_bytes() -> None:
    keys = {stream.new_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(k) == KEY_SIZE for k in keys)


SEG = 100
FIRST = SEG - HEADER_SIZE - TAG_SIZE
FULL = SEG - TAG_SIZE
BOUNDARY_SIZES = [0, 1, FIRST - 1, FIRST, FIRST + 1, FIRST + FULL - 1, FIRST + FULL]
BOUNDARY_SIZES += [FIRST + FULL + 1, FIRST + 7 * FULL + 3]


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
@pytest.mark.parametrize("workers", [1, 2])
def test_every_route_round_trips(size: int, workers: int) -> None:
    key, plain = stream.new_key(), os.urandom(size)
    ct = b"".join(
        stream.encrypt_chunks(pieces(plain, 7), key, b"ad", segment_size=SEG, workers=workers)
    )
    assert len(ct) == stream.ciphertext_size(size, segment_size=SEG)
    assert stream.plaintext_size(len(ct), segment_size=SEG) == size

    out = io.BytesIO()
    n = stream.decrypt_file(io.BytesIO(ct), out, key, b"ad", segment_size=SEG, workers=workers)
    assert (n, out.getvalue()) == (size, plain)

    got = stream.decrypt_chunks(pieces(ct, 13), key, b"ad", segment_size=SEG, workers=workers)
    assert b"".join(got) == plain

    out = io.BytesIO()
    n = stream.decrypt_file(
        io.BytesIO(ct[11:]), out, key, b"ad", prefix=ct[:11], segment_size=SEG, workers=workers
    )
    assert (n, out.getvalue()) == (size, plain)

    n = stream.decrypt_file(
        io.BytesIO(ct[11:]), None, key, b"ad", prefix=ct[:11], segment_size=SEG, workers=workers
    )
    assert n == size  # a verification pass: counted, written nowhere


class AtOffsets:
    """A positional sink: each segment written at its offset, from whichever thread."""

    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)
        self.calls: list[int] = []

    def write_at(self, data: memoryview, offset: int, /) -> None:
        self.buffer[offset : offset + len(data)] = data
        self.calls.append(offset)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("size", [0, FIRST, FIRST + 1, FIRST + 3 * FULL + 5])
def test_a_positional_sink_gets_each_segment_at_its_offset(size: int, workers: int) -> None:
    key, plain = stream.new_key(), os.urandom(size)
    ct = b"".join(stream.encrypt_chunks([plain], key, b"ad", segment_size=SEG))
    sink = AtOffsets(size)
    n = stream.decrypt_file(
        io.BytesIO(ct[11:]), sink, key, b"ad", prefix=ct[:11], segment_size=SEG, workers=workers
    )
    assert (n, bytes(sink.buffer)) == (size, plain)
    damaged = bytearray(ct)
    damaged[-1] ^= 1
    with pytest.raises(DecryptionError):
        stream.decrypt_file(
            io.BytesIO(bytes(damaged)), AtOffsets(size), key, b"ad", segment_size=SEG
        )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_verification_pass_still_authenticates(workers: int) -> None:
    key, plain = stream.new_key(), os.urandom(FIRST + 3 * FULL)
    damaged = bytearray(b"".join(stream.encrypt_chunks([plain], key, b"ad", segment_size=SEG)))
    damaged[-1] ^= 1
    with pytest.raises(DecryptionError):
        stream.decrypt_file(
            io.BytesIO(bytes(damaged)), None, key, b"ad", segment_size=SEG, workers=workers
        )


def test_decrypted_chunks_are_independent_bytes() -> None:
    key, plain = stream.new_key(), os.urandom(5 * FULL)
    ct = b"".join(stream.encrypt_chunks([plain], key, b"ad", segment_size=SEG))
    kept = list(stream.decrypt_chunks([ct], key, b"ad", segment_size=SEG, workers=2))
    assert all(type(c) is bytes for c in kept)
    assert b"".join(kept) == plain  # no chunk was overwritten by a later segment


def test_segments_before_the_damage_are_released_and_the_rest_is_not() -> None:
    key, plain = stream.new_key(), os.urandom(FIRST + 5 * FULL)
    ct = bytearray(b"".join(stream.encrypt_chunks([plain], key, b"ad", segment_size=SEG)))
    ct[HEADER_SIZE + (SEG - HEADER_SIZE) + 2 * SEG + 5] ^= 1  # in segment 3
    got: list[bytes] = []
    with pytest.raises(DecryptionError):
        got.extend(stream.decrypt_chunks([bytes(ct)], key, b"ad", segment_size=SEG))
    assert b"".join(got) == plain[: FIRST + 2 * FULL]


def test_pipes_in_and_out_with_short_reads() -> None:
    """encrypt_chunks reads a pipe to EOF; decrypt_file writes into a pipe."""
    key, plain = stream.new_key(), os.urandom(3 * SEGMENT_SIZE + 17)

    def feed(fd: int, data: bytes, step: int) -> None:
        with os.fdopen(fd, "wb", buffering=0) as w:
            for i in range(0, len(data), step):
                w.write(data[i : i + step])

    r, w = os.pipe()
    writer = threading.Thread(target=feed, args=(w, plain, 40_000))
    writer.start()
    with os.fdopen(r, "rb", buffering=0) as src:
        ct = b"".join(stream.encrypt_chunks(iter(lambda: src.read(65536), b""), key, b"ad"))
    writer.join()

    r, w = os.pipe()
    got = bytearray()

    def drain() -> None:
        with os.fdopen(r, "rb") as src:
            while chunk := src.read(65536):
                got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with os.fdopen(w, "wb", buffering=0) as dst:
        assert stream.decrypt_file(io.BytesIO(ct), dst, key, b"ad") == len(plain)
    reader.join()
    assert got == plain


def test_associated_data_names() -> None:
    assert stream.resource_associated_data("models", "net.onnx") == (
        b"coffer/v1/resource/models/net.onnx"
    )
    assert stream.archive_associated_data("images-2024") == b"coffer/v1/archive/images-2024"
    with pytest.raises(BadName):
        stream.resource_associated_data("models/x", "y")
    with pytest.raises(BadName):
        stream.archive_associated_data("..")


def test_sizes() -> None:
    first = SEGMENT_SIZE - HEADER_SIZE - TAG_SIZE
    assert stream.ciphertext_size(0) == HEADER_SIZE + TAG_SIZE
    assert stream.ciphertext_size(first) == SEGMENT_SIZE
    assert stream.ciphertext_size(first + 1) == SEGMENT_SIZE + 1 + TAG_SIZE
    assert stream.ciphertext_size(4 << 30) == (4 << 30) + HEADER_SIZE + 4097 * TAG_SIZE
    for impossible in [0, HEADER_SIZE + TAG_SIZE - 1, SEGMENT_SIZE + 5]:
        with pytest.raises(ValueError, match="no ciphertext"):
            stream.plaintext_size(impossible)
    with pytest.raises(ValueError, match=">= 0"):
        stream.ciphertext_size(-1)


@pytest.mark.parametrize(
    ("key", "error"),
    [(b"k" * 31, ValueError), (b"k" * 33, ValueError), (b"", ValueError), ("k" * 32, TypeError)],
)
def test_a_bad_key_is_a_caller_mistake(key: bytes, error: type[Exception]) -> None:
    with pytest.raises(error, match="key"):
        list(stream.encrypt_chunks([b""], key, b"ad"))
    with pytest.raises(error, match="key"):
        list(stream.decrypt_chunks([b"x" * 100], key, b"ad"))
    with pytest.raises(error, match="key"):
        stream.decrypt_file(io.BytesIO(b"x" * 100), io.BytesIO(), key, b"ad")


def test_other_caller_mistakes() -> None:
    key = stream.new_key()
    with pytest.raises(TypeError, match="associated_data"):
        list(stream.encrypt_chunks([b""], key, "ad"))  # type: ignore[arg-type]
    for bad in [stream.MIN_SEGMENT_SIZE - 1, 0, stream.MAX_SEGMENT_SIZE + 1]:
        with pytest.raises(ValueError, match="segment_size"):
            list(stream.decrypt_chunks([b"x" * 100], key, b"ad", segment_size=bad))
    with pytest.raises(ValueError, match="workers"):
        list(stream.encrypt_chunks([b""], key, b"ad", workers=0))
    with pytest.raises(ValueError, match="salt"):
        list(
            stream._encrypt(
                pipeline.chunk_reader([]), key, b"ad", 64, 1, header=(b"s" * 31, b"p" * 7)
            )
        )


def test_plaintext_size_inverts_ciphertext_size() -> None:
    seg = 64
    for n in range(1000):
        assert (
            stream.plaintext_size(stream.ciphertext_size(n, segment_size=seg), segment_size=seg)
            == n
        )
    # No encryptor writes an empty last segment after a full one, but readers
    # (Tink's and ours) take it: such a size is valid too.
    assert stream.plaintext_size(
        HEADER_SIZE + (seg - HEADER_SIZE) + TAG_SIZE, segment_size=seg
    ) == (seg - HEADER_SIZE - TAG_SIZE)


def test_an_empty_last_segment_after_a_full_one_decrypts_as_in_tink(tink_oracle) -> None:  # type: ignore[no-untyped-def]
    """No encryptor writes this shape, but Tink's readers take it, and so do we."""
    seg, key, salt, prefix = 64, stream.new_key(), os.urandom(32), os.urandom(7)
    plain = os.urandom(seg - HEADER_SIZE - TAG_SIZE)
    cipher = segment.SegmentCipher(key, salt, prefix, b"ad")
    ct = (
        bytes([HEADER_SIZE])
        + salt
        + prefix
        + encrypt_segment(cipher, 0, False, plain)
        + encrypt_segment(cipher, 1, True, b"")
    )
    assert tink_oracle(key, seg).decrypt(ct, b"ad") == plain
    assert b"".join(stream.decrypt_chunks([ct], key, b"ad", segment_size=seg)) == plain


def encrypt_segment(cipher: segment.SegmentCipher, index: int, last: bool, plain: bytes) -> bytes:
    out = bytearray(len(plain) + TAG_SIZE)
    cipher.encrypt_into(index, last, memoryview(plain), memoryview(out))
    return bytes(out)
