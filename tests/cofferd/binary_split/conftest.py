"""Shared parts of the format's tests: the Tink oracle and the decrypt routes."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator

import pytest
from tink import streaming_aead
from tink_oracle import TinkOracle

from cofferd.binary_split import stream
from cofferd.errors import DecryptionError


@pytest.fixture(scope="session")
def tink_oracle() -> Callable[[bytes, int], TinkOracle]:
    streaming_aead.register()
    return TinkOracle


Route = Callable[[bytes, bytes, bytes, int], Iterator[bytes]]
"""(ciphertext, key, associated data, segment size) -> plaintext pieces as released."""


def _chunks(ct: bytes, key: bytes, ad: bytes, seg: int) -> Iterator[bytes]:
    # Odd chunk sizes, so segment boundaries fall inside chunks.
    pieces = (ct[i : i + 1000] for i in range(0, len(ct), 1000))
    yield from stream.decrypt_chunks(pieces, key, ad, segment_size=seg, workers=1)


def _chunks_parallel(ct: bytes, key: bytes, ad: bytes, seg: int) -> Iterator[bytes]:
    yield from stream.decrypt_chunks([ct], key, ad, segment_size=seg, workers=2)


class _Recorder(io.RawIOBase):
    """A destination that keeps every write, so a failure shows what got out."""

    def __init__(self, sink: list[bytes]) -> None:
        super().__init__()
        self.sink = sink

    def writable(self) -> bool:
        return True

    def write(self, data: object) -> int:
        view = memoryview(data)  # type: ignore[arg-type]
        self.sink.append(bytes(view))
        return len(view)


def _file_route(workers: int) -> Route:
    def route(ct: bytes, key: bytes, ad: bytes, seg: int) -> Iterator[bytes]:
        sink: list[bytes] = []
        # Hand out what reached the file even when decrypt_file raises: the
        # pieces are yielded, then the error goes on.
        try:
            stream.decrypt_file(
                io.BytesIO(ct), _Recorder(sink), key, ad, segment_size=seg, workers=workers
            )
        finally:
            yield from sink

    return route


def _cached_route(workers: int, prefix_len: int) -> Route:
    """As load reads a cached big part: a real file, the first bytes given as ``prefix``."""

    def route(ct: bytes, key: bytes, ad: bytes, seg: int) -> Iterator[bytes]:
        sink: list[bytes] = []
        with tempfile.TemporaryFile() as f:
            f.write(ct[prefix_len:])
            f.seek(0)
            try:
                stream.decrypt_file(
                    f,
                    _Recorder(sink),
                    key,
                    ad,
                    prefix=ct[:prefix_len],
                    segment_size=seg,
                    workers=workers,
                )
            finally:
                yield from sink

    return route


ROUTES: dict[str, Route] = {
    "chunks": _chunks,
    "chunks-2-threads": _chunks_parallel,
    "file": _file_route(1),
    "file-2-threads": _file_route(2),
    "cached-with-prefix": _cached_route(2, 47),
}


def released_before_failure(route: Route, ct: bytes, key: bytes, ad: bytes, seg: int) -> bytes:
    """Run a decrypt route that must fail; return all plaintext it let out first."""
    out: list[bytes] = []
    with pytest.raises(DecryptionError) as info:
        out.extend(route(ct, key, ad, seg))
    assert str(info.value) == str(DecryptionError())  # opaque: one message for all
    return b"".join(out)


@pytest.fixture(scope="session")
def assert_rejected() -> Callable[[bytes, bytes, bytes, bytes, int], None]:
    """Every decrypt route raises DecryptionError and lets out only a prefix."""

    def check(ct: bytes, key: bytes, ad: bytes, original: bytes, seg: int) -> None:
        for name, route in ROUTES.items():
            released = released_before_failure(route, ct, key, ad, seg)
            assert original.startswith(released), name

    return check
