"""Request bodies: framing (Content-Length or chunked), JSON objects, and their fields.

Nothing here trusts the client: lengths are checked, chunk lines are bounded,
JSON bodies are capped, and a field of the wrong type is a 400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import Message
from io import BufferedIOBase
from typing import Any

from coffer_upstream.errors import ClientGone, HttpError, bad_request

_MAX_CHUNK_LINE = 1024
_MAX_TRAILERS = 64
_DIGITS = re.compile(r"[0-9]{1,19}")
_HEX = re.compile(r"[0-9A-Fa-f]{1,16}")
_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")
_MAX_INT = 2**63 - 1


class Body:
    """The body of one request, read as a stream whatever its framing.

    ``length`` is the Content-Length, or None when chunked. A request with
    neither has an empty body (``present`` is False).
    """

    def __init__(self, rfile: BufferedIOBase, headers: Message) -> None:
        self._rfile = rfile
        encoding = headers.get("Transfer-Encoding")
        declared = headers.get("Content-Length")
        self.chunked = False
        self.length: int | None = 0
        self.present = True
        if encoding is not None:
            if encoding.strip().lower() != "chunked":
                raise HttpError(501, "only the chunked transfer encoding is supported")
            if declared is not None:
                # RFC 9112 6.1: both at once smells of request smuggling.
                raise bad_request("Content-Length and Transfer-Encoding together")
            self.chunked = True
            self.length = None
        elif declared is not None:
            if _DIGITS.fullmatch(declared.strip()) is None:
                raise bad_request("invalid Content-Length")
            self.length = int(declared.strip())
        else:
            self.present = False
        self._left = self.length or 0  # in the body, or in the current chunk
        self.done = not self.chunked and self._left == 0
        self.received = 0

    def readinto(self, buf: memoryview) -> int:
        """Fill ``buf`` with the next bytes; 0 at the end. Short reads are allowed."""
        if self.done:
            return 0
        if self.chunked and self._left == 0 and not self._next_chunk():
            return 0
        want = min(len(buf), self._left)
        with _socket_errors():
            got = self._rfile.readinto(buf[:want])
        if not got:
            raise bad_request("the request body ended early")
        self._left -= got
        self.received += got
        if self._left == 0:
            if self.chunked:
                with _socket_errors():
                    end = self._rfile.read(2)
                if end != b"\r\n":
                    raise bad_request("malformed chunked body")
            else:
                self.done = True
        return got

    def read(self, limit: int) -> bytes:
        """The whole body if it has at most ``limit`` bytes, else 413."""
        if self.length is not None and self.length > limit:
            raise HttpError(413, f"request body over {limit} bytes")
        out = bytearray()
        buf = bytearray(min(limit + 1, 64 * 1024))
        view = memoryview(buf)
        while n := self.readinto(view):
            out += view[:n]
            if len(out) > limit:
                raise HttpError(413, f"request body over {limit} bytes")
        return bytes(out)

    def _next_chunk(self) -> bool:
        """Read a chunk header; False (and done) at the last chunk."""
        with _socket_errors():
            line = self._rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\r\n"):
            raise bad_request("malformed chunked body")
        size_text = line[:-2].split(b";", 1)[0].strip().decode("latin-1")
        if _HEX.fullmatch(size_text) is None:
            raise bad_request("malformed chunked body")
        self._left = int(size_text, 16)
        if self._left > 0:
            return True
        for _ in range(_MAX_TRAILERS):
            with _socket_errors():
                trailer = self._rfile.readline(_MAX_CHUNK_LINE + 1)
            if trailer in (b"\r\n", b"\n"):
                self.done = True
                return False
            if not trailer.endswith(b"\n"):
                break
        raise bad_request("malformed chunked body")


@contextmanager
def _socket_errors() -> Iterator[None]:
    # A reset or a timeout on the connection: the client is gone, nobody to answer.
    try:
        yield
    except OSError as exc:
        raise ClientGone from exc


def parse_json_object(raw: bytes, empty_is_object: bool = False) -> dict[str, Any]:
    if not raw.strip() and empty_is_object:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8 and over-long integers.
        raise bad_request("request body is not valid JSON") from exc
    if not isinstance(value, dict):
        raise bad_request("request body must be a JSON object")
    return value


def field_str(body: dict[str, Any], key: str, max_len: int = 1024) -> str:
    value = body.get(key)
    if not isinstance(value, str):
        raise bad_request(f"field {key!r} must be a string")
    if len(value) > max_len:
        raise bad_request(f"field {key!r} is longer than {max_len} characters")
    return value


def field_int(body: dict[str, Any], key: str) -> int:
    value = body.get(key)
    # bool is an int in Python, not in JSON.
    if type(value) is not int or not 0 <= value <= _MAX_INT:
        raise bad_request(f"field {key!r} must be an integer from 0 to 2^63-1")
    return value


def field_base64(body: dict[str, Any], key: str, size: int | None = None) -> bytes:
    """Standard base64 (RFC 4648 section 4, padded), optionally of exactly ``size`` bytes."""
    value = body.get(key)
    if not isinstance(value, str):
        raise bad_request(f"field {key!r} must be a base64 string")
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (ValueError, binascii.Error) as exc:
        raise bad_request(f"field {key!r} is not valid base64") from exc
    if size is not None and len(raw) != size:
        raise bad_request(f"field {key!r} must decode to {size} bytes")
    return raw


def field_sha256(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or _SHA256.fullmatch(value) is None:
        raise bad_request(f"field {key!r} must be 64 hex digits")
    return value.lower()
