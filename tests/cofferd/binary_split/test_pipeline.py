"""The segment pipeline: order, the first failure stops it, readers and writers."""

from __future__ import annotations

import io
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cofferd.binary_split import pipeline, stream


def copy_transform(index: int, last: bool, src: memoryview, dst: memoryview) -> None:
    dst[:] = src


def run(
    data: bytes,
    *,
    first: int,
    size: int,
    workers: int,
    transform: pipeline.Transform = copy_transform,
) -> list[bytes]:
    reader = pipeline.chunk_reader([data])
    return [
        bytes(v)
        for v in pipeline.segments(
            reader, first_size=first, size=size, delta=0, transform=transform, workers=workers
        )
    ]


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("length", [0, 1, 9, 10, 11, 30, 31, 1000])
def test_segments_come_in_order_with_the_last_one_flagged(workers: int, length: int) -> None:
    seen: list[tuple[int, bool]] = []

    def transform(index: int, last: bool, src: memoryview, dst: memoryview) -> None:
        time.sleep(random.random() / 1000)  # finish out of order on purpose
        seen.append((index, last))
        dst[:] = src

    data = os.urandom(length)
    out = run(data, first=10, size=20, workers=workers, transform=transform)
    assert b"".join(out) == data
    assert [len(o) for o in out[:-1]] == ([10] + [20] * len(out))[: len(out) - 1]
    assert sorted(seen) == [(i, i == len(out) - 1) for i in range(len(out))]


def test_a_source_ending_on_a_boundary_ends_with_a_full_last_segment() -> None:
    flags: list[bool] = []

    def transform(index: int, last: bool, src: memoryview, dst: memoryview) -> None:
        flags.append(last)
        dst[:] = src

    out = run(bytes(30), first=10, size=20, workers=1, transform=transform)
    assert (out, flags) == ([bytes(10), bytes(20)], [False, True])
    assert run(b"", first=10, size=20, workers=1) == [b""]  # empty: one empty last segment


@pytest.mark.parametrize("workers", [1, 2])
def test_the_first_failure_stops_the_pipeline_after_the_earlier_outputs(workers: int) -> None:
    def transform(index: int, last: bool, src: memoryview, dst: memoryview) -> None:
        if index == 3:
            raise RuntimeError("segment 3 is bad")
        time.sleep(0.002 if index < 3 else 0)  # later ones finish first
        dst[:] = src

    got: list[bytes] = []
    with pytest.raises(RuntimeError, match="segment 3"):
        got.extend(
            bytes(v)
            for v in pipeline.segments(
                pipeline.chunk_reader([bytes(range(100))]),
                first_size=10,
                size=10,
                delta=0,
                transform=transform,
                workers=workers,
            )
        )
    assert b"".join(got) == bytes(range(30))


def test_the_pipeline_reads_no_further_than_a_few_segments_ahead() -> None:
    pulled = 0

    def source() -> Iterator[bytes]:
        nonlocal pulled
        for _ in range(1000):
            pulled += 1
            yield bytes(10)

    segments = pipeline.segments(
        pipeline.chunk_reader(source()),
        first_size=10,
        size=10,
        delta=0,
        transform=copy_transform,
        workers=2,
    )
    next(segments)
    assert pulled <= 2 + 2 + 1  # workers + 2 slots, one read ahead
    segments.close()


class Trickle(io.RawIOBase):
    """A raw file that reads at most a few bytes per call."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__()
        self.src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        data = self.src.read(min(len(buffer), 7))
        memoryview(buffer)[: len(data)] = data
        return len(data)


def test_file_reader_fills_the_buffer_across_short_reads() -> None:
    read = pipeline.file_reader(Trickle(bytes(range(50))))  # type: ignore[arg-type]
    assert bytes(read(memoryview(bytearray(30)))) == bytes(range(30))
    assert bytes(read(memoryview(bytearray(30)))) == bytes(range(30, 50))
    assert bytes(read(memoryview(bytearray(30)))) == b""


def test_file_reader_without_readinto_uses_read() -> None:
    class OnlyRead:
        def __init__(self) -> None:
            self.data = io.BytesIO(b"abcdef")

        def read(self, n: int) -> bytes:
            return self.data.read(min(n, 2))

    read = pipeline.file_reader(OnlyRead())  # type: ignore[arg-type]
    assert bytes(read(memoryview(bytearray(5)))) == b"abcde"


def test_chunk_reader_spans_chunks_and_lets_the_producer_reuse_its_buffer() -> None:
    buffer = bytearray(b"abc")

    def producer() -> Iterator[bytearray]:
        for _ in range(3):
            buffer[:] = b"xyz12"  # a resize: fails if a view of it is still held
            yield buffer

    read = pipeline.chunk_reader(producer())
    assert bytes(read(memoryview(bytearray(7)))) == b"xyz12xy"
    assert bytes(read(memoryview(bytearray(20)))) == b"z12xyz12"


def test_prefixed_reader_copies_across_the_seam() -> None:
    read = pipeline.prefixed(b"SMALL", pipeline.chunk_reader([b"big", b"part"]))
    assert bytes(read(memoryview(bytearray(3)))) == b"SMA"
    assert bytes(read(memoryview(bytearray(6)))) == b"LLbigp"
    assert bytes(read(memoryview(bytearray(6)))) == b"art"


def segment_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("coffer-segment")]


def test_a_failing_destination_stops_the_workers(tmp_path: Path) -> None:
    key, plain = stream.new_key(), os.urandom(5 * stream.SEGMENT_SIZE)
    ct = b"".join(stream.encrypt_chunks([plain], key, b"ad"))

    class BrokenPipe(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data) -> int:  # type: ignore[no-untyped-def,override]
            raise BrokenPipeError("the caller hung up")

    with pytest.raises(BrokenPipeError):
        stream.decrypt_file(io.BytesIO(ct), BrokenPipe(), key, b"ad", workers=2)  # type: ignore[arg-type]
    assert segment_threads() == []


def test_an_abandoned_stream_stops_the_workers() -> None:
    key = stream.new_key()
    chunks = stream.encrypt_chunks([bytes(3 * stream.SEGMENT_SIZE)], key, b"ad", workers=2)
    next(chunks)
    next(chunks)
    assert segment_threads() != []
    chunks.close()
    assert segment_threads() == []
