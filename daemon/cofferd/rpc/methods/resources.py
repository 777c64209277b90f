"""The resources: what the upstream offers, load, load into a memfd, pull, upload.

``list`` asks the upstream. ``load`` writes the plaintext into the caller's fd
(or inline). ``load_memfd`` fills a memfd the caller made, sized (``stat``
says the size) and allocated, so that its pages are charged to the caller's
memory cgroup and never to cofferd's: cofferd checks it, fills it, seals it
(no write, shrink, grow, or seal change), closes its copy and answers; on an
error the memfd is not sealed and holds nothing to use. ``pull`` fetches a
resource's big part into the cache and authenticates every byte on the way
(the decryption pass, its plaintext going nowhere). ``upload`` encrypts and
publishes the next version.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Mapping
from typing import Any, BinaryIO, cast

from coffer.protocol import ErrorCode
from cofferd.errors import BadRequest, InvalidParams, TooLarge
from cofferd.models import LoadResult, UploadResult
from cofferd.resources import listing, service
from cofferd.resources.sinks import BufferSink, MemfdSink, StreamSink
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.params import NAME_SCHEMA, check_name, count
from cofferd.rpc.dispatch.services import Services
from cofferd.rpc.dispatch.spec import Audit, Method, MethodSpec, RecordField, array, obj
from cofferd.rpc.transport.fdio import FdReader, FdWriter

#: The inline cap whatever the settings say: base64 of this many bytes, with the
#: JSON around it, still fits in one line of ``coffer.protocol.MAX_LINE_BYTES``.
INLINE_LIMIT = 6_000_000


def _inline_cap(app: Services) -> int:
    return min(app.settings.inline_max_bytes, INLINE_LIMIT)


def list_(call: Call, /, folder: object = "models") -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    app = call.app
    client = app.api_client()
    cached = {(e.name, e.version) for e in app.index.entries(folder_)}
    items = [
        {
            "filename": item.name,
            "version": item.version,
            "plaintext_size": item.plaintext_size,
            "big_size": item.big_size,
            "updated_at": item.updated_at,
            "cached": (item.name, item.version) in cached,
        }
        for item in listing.every_item(lambda cursor: client.list_page(folder_, cursor))
    ]
    return {"folder": folder_, "items": items}


def load(call: Call, /, filename: object, folder: object = "models") -> dict[str, Any]:
    """Write the plaintext into the request's fd, close it, then answer.

    Without an fd the plaintext comes back inline as base64, up to the cap.
    """
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    fd = call.take_fd()
    app = call.app
    with app.notifier.working(f"loading {folder_}/{name}"):
        if fd is None:
            # The upstream's announced size is checked against the cap first.
            buffer = BufferSink(_inline_cap(app))
            result = app.loads.load(folder_, name, buffer)
            data = base64.b64encode(buffer.getvalue()).decode("ascii")
            return {**loaded(result), "data": data}
        # Closed before the result goes out, so the caller's EOF comes first.
        with FdWriter(fd, call) as out:
            result = app.loads.load(folder_, name, StreamSink(cast(BinaryIO, out)))
    return loaded(result)


def load_memfd(call: Call, /, filename: object, folder: object = "models") -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    fd = call.take_fd()
    if fd is None:
        raise BadRequest(
            "load_memfd needs a memfd passed with the request, of the size stat answers,"
            " its pages allocated"
        )
    app = call.app
    sink = MemfdSink(fd, app.settings.memfd_max_bytes)
    try:
        with app.notifier.working(f"loading {folder_}/{name} into a memfd"):
            result = app.loads.load(folder_, name, sink)
        sink.seal()
    finally:
        sink.close()
    return loaded(result)


def stat(call: Call, /, filename: object, folder: object = "models") -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    version, size = call.app.loads.stat(folder_, name)
    return {"folder": folder_, "filename": name, "version": version, "size": size}


def pull(
    call: Call, /, filename: object, folder: object = "models", pin: object = False
) -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    if not isinstance(pin, bool):
        raise InvalidParams("pin must be a boolean")
    app = call.app
    with app.notifier.working(f"pulling {folder_}/{name}"):
        result = app.loads.pull(folder_, name)
    if pin:
        app.index.set_pinned(folder_, name, True)
    return {**loaded(result), "pinned": app.index.is_pinned(folder_, name)}


def upload(
    call: Call,
    /,
    filename: object,
    folder: object = "models",
    size: object = None,
    data: object = None,
) -> dict[str, Any]:
    """Read the request's fd to EOF (or the inline base64 ``data``), encrypt, publish.

    With ``size`` it publishes only if exactly that many bytes came; with an
    fd also only if the caller is still connected when the input ends.
    """
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    size_ = None if size is None else count(size, "size")
    fd = call.take_fd()
    app = call.app
    src: io.RawIOBase | io.BytesIO
    if fd is not None:
        try:
            src = FdReader(fd, call, expected=size_, limit=app.settings.max_upload_bytes)
        except TooLarge:
            os.close(fd)
            raise
        if data is not None:
            src.close()
            raise BadRequest("give the content as an fd or as data, not both")
    else:
        src = io.BytesIO(_inline(data, size_, _inline_cap(app)))
    with app.notifier.working(f"uploading {folder_}/{name}"), src:
        result = service.upload(app.api_client(), folder_, name, cast(BinaryIO, src))
    return _uploaded(result)


def _inline(data: object, size: int | None, cap: int) -> bytes:
    if data is None:
        raise BadRequest("upload needs an fd passed with the request, or base64 data")
    if not isinstance(data, str):
        raise InvalidParams("data must be a base64 string")
    too_large = f"inline data is over the cap of {cap} bytes; pass an fd instead"
    if len(data) > (cap + 2) // 3 * 4:  # refused before decoding anything
        raise TooLarge(too_large)
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidParams("data is not valid base64") from exc
    if len(raw) > cap:
        raise TooLarge(too_large)
    if size is not None and len(raw) != size:
        raise BadRequest(f"data holds {len(raw)} bytes, not the announced {size}")
    return raw


def loaded(result: LoadResult) -> dict[str, Any]:
    """What a load answers (``load``, ``load_memfd``, ``pull``): which version, how many bytes."""
    return {
        "folder": result.folder,
        "filename": result.name,
        "version": result.version,
        "size": result.size,
        "from_cache": result.from_cache,
    }


def _uploaded(result: UploadResult) -> dict[str, Any]:
    return {
        "status": "ok",
        "folder": result.folder,
        "filename": result.name,
        "version": result.version,
        "size": result.size,
        "target": result.target,
    }


#: A version of a resource and its plaintext size, as load and upload answer it.
_VERSIONED = {
    "folder": NAME_SCHEMA,
    "filename": NAME_SCHEMA,
    "version": {"type": "integer", "minimum": 1},
    "size": {"type": "integer", "minimum": 0},
}
_COUNT = {"type": "integer", "minimum": 0}
_HEX64 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
#: The release a publisher signs for an upload: a TUF target with its path
#: (docs/trust.md, "A release: the signed target").
TARGET = {
    **obj(
        {
            "path": {"type": "string", "description": "resources/<folder>/<filename>"},
            "length": {**_COUNT, "description": "the small part's size"},
            "hashes": obj({"sha256": {**_HEX64, "description": "of the small part"}}, ("sha256",)),
            "custom": obj(
                {
                    "coffer": obj(
                        {
                            "kind": {"const": "resource"},
                            "version": {"type": "integer", "minimum": 1},
                            "key_commitment": _HEX64,
                            "big_size": _COUNT,
                            "big_sha256": _HEX64,
                            "plaintext_size": _COUNT,
                            "segment_size": {"type": "integer", "minimum": 1},
                            "segments_sha256": _HEX64,
                        },
                        (
                            "kind",
                            "version",
                            "key_commitment",
                            "big_size",
                            "big_sha256",
                            "plaintext_size",
                            "segment_size",
                            "segments_sha256",
                        ),
                    )
                },
                ("coffer",),
            ),
        },
        ("path", "length", "hashes", "custom"),
    ),
    "description": "the release to sign into the publishers role (docs/trust.md)",
}
#: The schema of :func:`loaded`'s members.
LOADED = {**_VERSIONED, "from_cache": {"type": "boolean"}}
#: What a load takes, and may answer beside the common errors (``load``, ``load_memfd``).
LOAD_PARAMS = obj(
    {"filename": NAME_SCHEMA, "folder": {**NAME_SCHEMA, "default": "models"}}, ("filename",)
)
LOAD_ERRORS = (
    ErrorCode.BAD_REQUEST,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.NOT_FOUND,
    ErrorCode.TOO_LARGE,
    ErrorCode.UPSTREAM_BAD_DATA,
    ErrorCode.UPSTREAM_UNAVAILABLE,
    ErrorCode.OFFLINE_REFUSED,
    ErrorCode.UNTRUSTED,
)
#: The audit record of a call on one resource: which one, from the params,
#: then which version and how many bytes, from the result.
_RESOURCE_PARAMS: dict[RecordField, str] = {"folder": "folder", "name": "filename"}
_VERSION_RESULT: dict[RecordField, str] = {
    "folder": "folder",
    "name": "filename",
    "version": "version",
    "bytes": "size",
}
_UPSTREAM_ERRORS = (
    ErrorCode.UNAUTHORIZED,
    ErrorCode.NOT_FOUND,
    ErrorCode.UPSTREAM_BAD_DATA,
    ErrorCode.UPSTREAM_UNAVAILABLE,
)


def _load_spec(
    name: str,
    func: Method,
    summary: str,
    message_id: str,
    **extra: Mapping[str, Any],
) -> MethodSpec:
    """A load's spec (``load``, ``load_memfd``): the same params, errors, audit and counters."""
    return MethodSpec(
        name,
        func,
        summary,
        params=LOAD_PARAMS,
        result=obj({**LOADED, **extra}, ("folder", "filename", "version", "size", "from_cache")),
        errors=LOAD_ERRORS,
        fd="takes",
        audit=Audit(message_id, _RESOURCE_PARAMS, _VERSION_RESULT),
        traffic=("out", "size"),
        cache_hit="from_cache",
    )


SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "list",
        list_,
        "The resources of a folder the upstream offers, each marked cached or not.",
        params=obj({"folder": {**NAME_SCHEMA, "default": "models"}}),
        result=obj(
            {
                "folder": NAME_SCHEMA,
                "items": array(
                    obj(
                        {
                            "filename": NAME_SCHEMA,
                            "version": _COUNT,
                            "plaintext_size": _COUNT,
                            "big_size": _COUNT,
                            "updated_at": {"type": ["number", "null"]},
                            "cached": {"type": "boolean"},
                        },
                        (
                            "filename",
                            "version",
                            "plaintext_size",
                            "big_size",
                            "updated_at",
                            "cached",
                        ),
                    )
                ),
            },
            ("folder", "items"),
        ),
        errors=(ErrorCode.BAD_REQUEST, *_UPSTREAM_ERRORS),
    ),
    _load_spec(
        "load",
        load,
        "The plaintext of a resource's current version, into the fd passed, else inline.",
        "57ceaf16529b48b6a928cb96acdcfad8",
        data={"type": "string", "contentEncoding": "base64"},
    ),
    _load_spec(
        "load_memfd",
        load_memfd,
        "The plaintext of a resource's current version into the caller's memfd, then sealed.",
        "7857394d749c4cd28f780fb789a8ff89",
    ),
    MethodSpec(
        "stat",
        stat,
        "The version and plaintext size a load of a resource would deliver now.",
        params=LOAD_PARAMS,
        result=obj(_VERSIONED, ("folder", "filename", "version", "size")),
        errors=tuple(e for e in LOAD_ERRORS if e is not ErrorCode.TOO_LARGE),
    ),
    MethodSpec(
        "pull",
        pull,
        "Fetch a resource's current version into the cache, every byte authenticated;"
        " no plaintext is handed out.",
        params=obj(
            {
                "filename": NAME_SCHEMA,
                "folder": {**NAME_SCHEMA, "default": "models"},
                "pin": {"type": "boolean", "default": False},
            },
            ("filename",),
        ),
        result=obj(
            {**_VERSIONED, "from_cache": {"type": "boolean"}, "pinned": {"type": "boolean"}},
            ("folder", "filename", "version", "size", "from_cache", "pinned"),
        ),
        errors=(
            ErrorCode.BAD_REQUEST,
            ErrorCode.TOO_LARGE,
            *_UPSTREAM_ERRORS,
            ErrorCode.OFFLINE_REFUSED,
            ErrorCode.UNTRUSTED,
            ErrorCode.STATE_UNWRITABLE,
        ),
        # Pinning keeps a resource for every caller: an operator's decision.
        operator_params=("pin",),
        audit=Audit("6c0a80ae66b2415d9d9ce1a389e12e13", _RESOURCE_PARAMS, _VERSION_RESULT),
        cache_hit="from_cache",
    ),
    MethodSpec(
        "upload",
        upload,
        "Encrypt the fd's bytes (or inline base64 data) and publish the next version.",
        params=obj(
            {
                "filename": NAME_SCHEMA,
                "folder": {**NAME_SCHEMA, "default": "models"},
                "size": {"type": ["integer", "null"], "minimum": 0, "default": None},
                "data": {"type": ["string", "null"], "contentEncoding": "base64", "default": None},
            },
            ("filename",),
        ),
        result=obj(
            {"status": {"const": "ok"}, **_VERSIONED, "target": TARGET},
            ("status", "folder", "filename", "version", "size", "target"),
        ),
        errors=(
            ErrorCode.BAD_REQUEST,
            ErrorCode.UNAUTHORIZED,
            ErrorCode.CONFLICT,
            ErrorCode.TOO_LARGE,
            ErrorCode.UPSTREAM_BAD_DATA,
            ErrorCode.UPSTREAM_UNAVAILABLE,
        ),
        fd="takes",
        audit=Audit("60b5d1b82d384743a735eb6e8ededd4e", _RESOURCE_PARAMS, _VERSION_RESULT),
        traffic=("in", "size"),
    ),
)
