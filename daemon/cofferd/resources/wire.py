"""The upstream's answers (protocol v1), checked before anything trusts them.

Every body the upstream sends is parsed here into a frozen dataclass; a field
that is missing, of the wrong type or out of range raises
:class:`~cofferd.errors.UpstreamProtocolError`, so the rest of cofferd never
meets a half-valid answer. Messages name the field, never its value: values
may be keys or presigned URLs.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from cofferd.errors import UpstreamProtocolError

KEY_SIZE = 32
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Token:
    """A bearer token and how many seconds the upstream says it lives."""

    access_token: str
    expires_in: float

    def __repr__(self) -> str:  # the token is a secret: keep it out of logs and tracebacks
        return f"Token(expires_in={self.expires_in})"


@dataclass(frozen=True)
class ResourceInfo:
    """The current version of a resource: its small part, key and where its big part is."""

    folder: str
    name: str
    version: int
    small: bytes
    key: bytes
    big_url: str
    big_size: int
    big_sha256: str
    plaintext_size: int
    #: The upstream's signed lease as received (payload, signature, key_id), or
    #: None when it sends none; checked by ``cofferd.field.lease``, not here.
    lease: dict[str, Any] | None = None

    def __repr__(self) -> str:  # key, small part and presigned URL stay out of logs
        return (
            f"ResourceInfo(folder={self.folder!r}, name={self.name!r}, version={self.version}, "
            f"big_size={self.big_size}, plaintext_size={self.plaintext_size})"
        )


@dataclass(frozen=True)
class UploadTicket:
    """A begun two-phase upload: where to PUT the big part, and its id for the commit."""

    upload_id: str
    big_url: str
    #: The part size of the multipart upload the upstream offers (an extension
    #: of the protocol), or None: the big part goes whole to ``big_url``.
    part_size: int | None = None

    def __repr__(self) -> str:
        return f"UploadTicket(upload_id={self.upload_id!r})"


@dataclass(frozen=True)
class Committed:
    """The version a commit made current."""

    folder: str
    name: str
    version: int


@dataclass(frozen=True)
class StoredBlob:
    """What the CDN says it stored after a PUT."""

    size: int
    sha256: str


def parse_token(body: object) -> Token:
    obj = _object(body, "login")
    token = _str(obj, "access_token", "login")
    if not token:
        raise UpstreamProtocolError("login answer: empty access_token")
    if str(obj.get("token_type", "")).lower() != "bearer":
        raise UpstreamProtocolError("login answer: token_type is not bearer")
    expires_in = obj.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
        raise UpstreamProtocolError("login answer: expires_in is not a positive number")
    return Token(access_token=token, expires_in=float(expires_in))


def parse_resource(body: object, folder: str, name: str) -> ResourceInfo:
    what = "resource"
    obj = _object(body, what)
    if obj.get("folder") != folder or obj.get("name") != name:
        raise UpstreamProtocolError("resource answer: folder/name differ from the request")
    key = _b64(obj, "key", what)
    if len(key) != KEY_SIZE:
        raise UpstreamProtocolError(f"resource answer: key is not {KEY_SIZE} bytes")
    return ResourceInfo(
        folder=folder,
        name=name,
        version=_int(obj, "version", what, minimum=1),
        small=_b64(obj, "small", what),
        key=key,
        big_url=_url(obj, "big_url", what),
        big_size=_int(obj, "big_size", what),
        big_sha256=_sha256(obj, "big_sha256", what),
        plaintext_size=_int(obj, "plaintext_size", what),
        lease=obj["lease"] if isinstance(obj.get("lease"), dict) else None,
    )


def parse_ticket(body: object) -> UploadTicket:
    what = "upload"
    obj = _object(body, what)
    upload_id = _str(obj, "upload_id", what)
    # The id goes back into a URL path; hold it to a conservative alphabet.
    if not re.fullmatch(r"[A-Za-z0-9._~-]{1,256}", upload_id):
        raise UpstreamProtocolError("upload answer: upload_id has unexpected characters")
    part_size = None
    if (multipart := obj.get("multipart")) is not None:
        offer = _object(multipart, "upload multipart")
        part_size = _int(offer, "part_size", "upload multipart", minimum=1)
    return UploadTicket(
        upload_id=upload_id, big_url=_url(obj, "big_url", what), part_size=part_size
    )


def parse_part_url(body: object) -> str:
    return _url(_object(body, "upload part"), "url", "upload part")


def parse_committed(body: object, folder: str, name: str) -> Committed:
    what = "commit"
    obj = _object(body, what)
    if obj.get("folder") != folder or obj.get("name") != name:
        raise UpstreamProtocolError("commit answer: folder/name differ from the request")
    return Committed(folder=folder, name=name, version=_int(obj, "version", what, minimum=1))


def parse_stored_blob(body: object) -> StoredBlob:
    what = "big part upload"
    obj = _object(body, what)
    return StoredBlob(size=_int(obj, "size", what), sha256=_sha256(obj, "sha256", what))


def parse_archive_key(body: object, archive_id: str) -> bytes:
    what = "archive key"
    obj = _object(body, what)
    if obj.get("archive_id") != archive_id:
        raise UpstreamProtocolError("archive key answer: archive_id differs from the request")
    key = _b64(obj, "key", what)
    if len(key) != KEY_SIZE:
        raise UpstreamProtocolError(f"archive key answer: key is not {KEY_SIZE} bytes")
    return key


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _object(body: object, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UpstreamProtocolError(f"{what} answer is not a JSON object")
    return body


def _str(obj: dict[str, Any], field: str, what: str) -> str:
    value = obj.get(field)
    if not isinstance(value, str):
        raise UpstreamProtocolError(f"{what} answer: {field} is missing or not a string")
    return value


def _int(obj: dict[str, Any], field: str, what: str, minimum: int = 0) -> int:
    value = obj.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UpstreamProtocolError(f"{what} answer: {field} is not an integer >= {minimum}")
    return value


def _b64(obj: dict[str, Any], field: str, what: str) -> bytes:
    value = _str(obj, field, what)
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UpstreamProtocolError(f"{what} answer: {field} is not valid base64") from exc


def _sha256(obj: dict[str, Any], field: str, what: str) -> str:
    value = _str(obj, field, what).lower()
    if not _SHA256_HEX.fullmatch(value):
        raise UpstreamProtocolError(f"{what} answer: {field} is not a hex sha256")
    return value


def _url(obj: dict[str, Any], field: str, what: str) -> str:
    value = _str(obj, field, what)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UpstreamProtocolError(f"{what} answer: {field} is not an absolute http(s) URL")
    return value
