"""The RPC methods: check params, call one service, return a plain dict.

Each takes the :class:`~cofferd.rpc.dispatch.context.Call` first (positional only, so
no param can pose as it), then the request's params by name; jsonrpcserver
answers -32602 for missing or unknown ones. Values of the wrong type are
:class:`~cofferd.errors.InvalidParams`, names failing the name rule are
:class:`~cofferd.errors.BadName`. No method logs its params.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from typing import Any, BinaryIO, cast

from coffer.protocol import ErrorCode
from cofferd import __version__
from cofferd.errors import BadRequest, Forbidden, InvalidParams, TooLarge
from cofferd.models import LoadResult, UnlockState, UploadResult
from cofferd.resources import service
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.params import NAME_SCHEMA, check_name, text
from cofferd.rpc.dispatch.services import Services
from cofferd.rpc.dispatch.spec import MethodSpec, obj
from cofferd.rpc.methods.cache import CACHE_STATUS
from cofferd.rpc.methods.session import FIELD_STATUS, field_status
from cofferd.rpc.transport.fdio import CappedBuffer, FdReader, FdWriter

#: The inline cap whatever the settings say: base64 of this many bytes, with the
#: JSON around it, still fits in one line of ``coffer.protocol.MAX_LINE_BYTES``.
INLINE_LIMIT = 6_000_000


def _inline_cap(app: Services) -> int:
    return min(app.settings.inline_max_bytes, INLINE_LIMIT)


def services(call: Call) -> Services:
    """The daemon's services; a call outside the daemon (no services) is a bug."""
    assert call.services is not None, "a method called without the daemon's services"
    return call.services


def health(call: Call, /) -> dict[str, Any]:
    return {"status": "ok", "version": __version__}


def status(call: Call, /) -> dict[str, Any]:
    app = services(call)
    return {
        "authenticated": app.api_client().authenticated,
        "model_cache_dir": str(app.settings.cache_dir),
        "upstream_url": app.settings.upstream_url,
        "version": __version__,
        # Never waits: the engine is checked in the background after a
        # restart, and this says when it last was (null: not yet).
        "unlock": {
            "state": app.unlock.state.value,
            "engine_checked_at": app.unlock.engine_checked_at,
        },
        "field": field_status(app),
        "cache": app.managed.status(),
    }


def login(call: Call, /, email: object, password: object) -> dict[str, Any]:
    # It changes the identity every caller uses: only the uids of login_uids
    # may (Forbidden, 403). The upstream decides then; its refusal is
    # Unauthorized (401), the same for a wrong email as for a wrong password,
    # and leaves the working login in place.
    app = services(call)
    if call.peer.uid not in app.settings.allowed_login_uids():
        raise Forbidden(f"uid {call.peer.uid} may not change cofferd's login (see login_uids)")
    app.api_client().login(text(email, "email"), text(password, "password"))
    app.boot_login.login_called()
    return {"status": "ok"}


def load(call: Call, /, filename: object, folder: object = "models") -> dict[str, Any]:
    """Write the plaintext into the request's fd, close it, then answer.

    Without an fd the plaintext comes back inline as base64, up to the cap.
    """
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    fd = call.take_fd()
    app = services(call)
    with app.notifier.working(f"loading {folder_}/{name}"):
        if fd is None:
            cap = _inline_cap(app)
            buffer = CappedBuffer(cap)  # the upstream's announced size is checked first
            result = service.load(
                app.api_client(),
                app.managed,
                folder_,
                name,
                buffer,
                max_size=cap,
                resolve=app.field.resolve,
            )
            data = base64.b64encode(buffer.getbuffer()).decode("ascii")
            return {**loaded(result), "data": data}
        # Closed before the result goes out, so the caller's EOF comes first.
        with FdWriter(fd, call) as out:
            result = service.load(
                app.api_client(),
                app.managed,
                folder_,
                name,
                cast(BinaryIO, out),
                resolve=app.field.resolve,
            )
    return loaded(result)


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
    if size is not None and (type(size) is not int or size < 0):
        raise InvalidParams("size must be a non-negative integer")
    fd = call.take_fd()
    app = services(call)
    src: io.RawIOBase | io.BytesIO
    if fd is not None:
        try:
            src = FdReader(fd, call, expected=size, limit=app.settings.max_upload_bytes)
        except TooLarge:
            os.close(fd)
            raise
        if data is not None:
            src.close()
            raise BadRequest("give the content as an fd or as data, not both")
    else:
        src = io.BytesIO(_inline(data, size, _inline_cap(app)))
    with app.notifier.working(f"uploading {folder_}/{name}"), src:
        result = service.upload(app.api_client(), folder_, name, cast(BinaryIO, src))
    return _uploaded(result)


def _inline(data: object, size: object, cap: int) -> bytes:
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
    """What a load answers (``load``, ``load_memfd``): which version, how many bytes."""
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
    }


#: A version of a resource and its plaintext size, as load and upload answer it.
_VERSIONED = {
    "folder": NAME_SCHEMA,
    "filename": NAME_SCHEMA,
    "version": {"type": "integer", "minimum": 1},
    "size": {"type": "integer", "minimum": 0},
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
)
#: The params of a call that logs in (``login``, ``unlock``).
CREDENTIALS = obj(
    {"email": {"type": "string"}, "password": {"type": "string"}}, ("email", "password")
)

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "health",
        health,
        "Whether cofferd serves, and its version.",
        result=obj(
            {"status": {"const": "ok"}, "version": {"type": "string"}}, ("status", "version")
        ),
    ),
    MethodSpec(
        "status",
        status,
        "Login, cache, upstream and unlock state.",
        result=obj(
            {
                "authenticated": {"type": "boolean"},
                "model_cache_dir": {"type": "string"},
                "upstream_url": {"type": "string"},
                "version": {"type": "string"},
                "unlock": obj(
                    {
                        "state": {"enum": [s.value for s in UnlockState]},
                        "engine_checked_at": {"type": ["number", "null"]},
                    },
                    ("state",),
                ),
                "field": FIELD_STATUS,
                "cache": CACHE_STATUS,
            },
            ("authenticated", "model_cache_dir", "upstream_url", "version", "unlock", "field"),
        ),
    ),
    MethodSpec(
        "login",
        login,
        "Log cofferd in to the upstream; the credentials stay in memory.",
        params=CREDENTIALS,
        result=obj({"status": {"const": "ok"}}, ("status",)),
        errors=(
            ErrorCode.UNAUTHORIZED,
            ErrorCode.FORBIDDEN,
            ErrorCode.UPSTREAM_UNAVAILABLE,
            ErrorCode.UPSTREAM_BAD_DATA,
        ),
    ),
    MethodSpec(
        "load",
        load,
        "The plaintext of a resource's current version, into the fd passed, else inline.",
        params=LOAD_PARAMS,
        result=obj(
            {**LOADED, "data": {"type": "string", "contentEncoding": "base64"}},
            ("folder", "filename", "version", "size", "from_cache"),
        ),
        errors=LOAD_ERRORS,
        fd="takes",
        traffic="out",
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
            {"status": {"const": "ok"}, **_VERSIONED},
            ("status", "folder", "filename", "version", "size"),
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
        traffic="in",
    ),
)
