"""JSON request bodies and their fields.

Nothing here trusts the client: a field of the wrong type, or a string no
UTF-8 can carry (a lone surrogate such as ``"\\ud800"``), is a 400, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from coffer_upstream.errors import bad_request

_SHA256 = re.compile(r"[0-9A-Fa-f]{64}")
_MAX_INT = 2**63 - 1


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
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise bad_request(f"field {key!r} is not valid Unicode") from exc
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
