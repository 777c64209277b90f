"""The shared pieces of the foreign boundaries: a watched request body, printable text."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from cofferd.errors import DecryptionError
from cofferd.foreign import WatchedBody, printable


def failing_source() -> Iterator[bytes]:
    yield b"first"
    raise DecryptionError


class LibraryError(Exception):
    """What a library makes of a body that raised (a cut connection)."""


def library_that_wraps(chunks: Iterator[bytes]) -> None:
    try:
        for _ in chunks:
            pass
    except Exception as exc:
        raise LibraryError("connection aborted") from exc


def library_that_answers_early(chunks: Iterator[bytes]) -> str:
    next(chunks)
    with contextlib.suppress(DecryptionError):  # the library swallowed it and answered anyway
        next(chunks)
    return "200 OK"


def test_the_sources_error_replaces_the_librarys() -> None:
    body = WatchedBody(failing_source())
    with pytest.raises(DecryptionError) as info, body.source_errors_first():
        library_that_wraps(body.chunks())
    assert info.value.__cause__ is None


def test_the_sources_error_comes_out_even_after_an_answer() -> None:
    body = WatchedBody(failing_source())
    with pytest.raises(DecryptionError), body.source_errors_first():
        assert library_that_answers_early(body.chunks()) == "200 OK"


def test_the_librarys_own_error_passes_when_the_source_is_fine() -> None:
    body = WatchedBody([b"a", b"b"])

    def refuse(chunks: Iterator[bytes]) -> None:
        next(chunks)
        raise LibraryError("refused")

    with pytest.raises(LibraryError, match="refused"), body.source_errors_first():
        refuse(body.chunks())


def test_a_body_that_ends_well_changes_nothing() -> None:
    body = WatchedBody([b"a", b"b"])
    with body.source_errors_first():
        assert b"".join(body.chunks()) == b"ab"


def test_printable_cuts_and_masks() -> None:
    assert printable("ok\x1b[31m\nred") == "ok?[31m?red"
    assert printable("x" * 500) == "x" * 300
    assert printable(ValueError("bad"), 2) == "ba"
