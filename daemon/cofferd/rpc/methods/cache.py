"""The cache methods: what the upstream offers, what is cached, fetch ahead, drop, prune, pin.

``list`` asks the upstream; the others work on the device's cache and index.
``pull`` fetches a resource's big part into the cache and authenticates every
byte on the way (the decryption pass, its plaintext going nowhere): no
plaintext leaves cofferd. ``evict`` of an entry in use is refused with
Conflict (the caller retries), rather than deferred: a deferred eviction
would be a promise the daemon must keep across restarts, for little gain.
"""

from __future__ import annotations

from typing import Any

from coffer.protocol import ErrorCode
from cofferd.errors import InvalidParams, NotFound
from cofferd.resources import listing, service
from cofferd.resources.index import Entry
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.params import NAME_SCHEMA, check_name
from cofferd.rpc.dispatch.services import Services
from cofferd.rpc.dispatch.spec import MethodSpec, obj


def _services(call: Call) -> Services:
    assert call.services is not None, "a method called without the daemon's services"
    return call.services


def list_(call: Call, /, folder: object = "models") -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    app = _services(call)
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


def cache_list(call: Call, /) -> dict[str, Any]:
    app = _services(call)
    records = {(r.folder, r.name, r.version): r.lease_expires for r in app.index.records()}
    entries = [
        {
            **_entry(e),
            "last_used": e.last_used,
            "pinned": e.pinned,
            "in_use": app.managed.in_use(e),
            "lease_expires": records.get((e.folder, e.name, e.version)),
        }
        for e in app.index.entries()
    ]
    status = app.managed.status()
    return {
        "entries": entries,
        "bytes": status["bytes"],
        "max_bytes": status["max_bytes"],
        "free_floor": status["free_floor"],
    }


def pull(
    call: Call, /, filename: object, folder: object = "models", pin: object = False
) -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    if not isinstance(pin, bool):
        raise InvalidParams("pin must be a boolean")
    app = _services(call)
    with app.notifier.working(f"pulling {folder_}/{name}"):
        result = service.pull(
            app.api_client(), app.managed, folder_, name, resolve=app.field.resolve
        )
    if pin:
        app.index.set_pinned(folder_, name, True)
    return {
        "folder": result.folder,
        "filename": result.name,
        "version": result.version,
        "size": result.size,
        "from_cache": result.from_cache,
        "pinned": app.index.is_pinned(folder_, name),
    }


def evict(call: Call, /, filename: object, folder: object = "models") -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    gone = _services(call).managed.evict(folder_, name)
    return {"evicted": [_entry(e) for e in gone], "bytes": sum(e.size for e in gone)}


def prune(call: Call, /, max_bytes: object) -> dict[str, Any]:
    if type(max_bytes) is not int or max_bytes < 0:
        raise InvalidParams("max_bytes must be a non-negative integer")
    app = _services(call)
    gone = app.managed.prune(max_bytes)
    return {
        "evicted": [_entry(e) for e in gone],
        "bytes": sum(e.size for e in gone),
        "held": app.index.total_size(),
    }


def pin(
    call: Call, /, filename: object, folder: object = "models", pinned: object = True
) -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    if not isinstance(pinned, bool):
        raise InvalidParams("pinned must be a boolean")
    app = _services(call)
    if pinned and not any(e.name == name for e in app.index.entries(folder_)):
        raise NotFound(f"{folder_}/{name} is not in the cache; pull it with pin set")
    app.index.set_pinned(folder_, name, pinned)
    return {"folder": folder_, "filename": name, "pinned": pinned}


def _entry(e: Entry) -> dict[str, Any]:
    return {"folder": e.folder, "filename": e.name, "version": e.version, "size": e.size}


_COUNT = {"type": "integer", "minimum": 0}
_TIME = {"type": ["number", "null"]}
_RESOURCE = {"filename": NAME_SCHEMA, "folder": {**NAME_SCHEMA, "default": "models"}}
_ENTRY = obj(
    {"folder": NAME_SCHEMA, "filename": NAME_SCHEMA, "version": _COUNT, "size": _COUNT},
    ("folder", "filename", "version", "size"),
)
_EVICTED = {"evicted": {"type": "array", "items": _ENTRY}, "bytes": _COUNT}

#: The ``cache`` member of ``status``.
CACHE_STATUS = obj(
    {
        "bytes": _COUNT,
        "entries": _COUNT,
        "max_bytes": _COUNT,
        "free_floor": _COUNT,
        "downloads": {
            "type": "array",
            "items": obj(
                {
                    "folder": NAME_SCHEMA,
                    "filename": NAME_SCHEMA,
                    "version": _COUNT,
                    "written": _COUNT,
                    "size": _COUNT,
                },
                ("folder", "filename", "version", "written", "size"),
            ),
        },
        "last_uncached": {
            "oneOf": [
                {"type": "null"},
                obj(
                    {
                        "folder": NAME_SCHEMA,
                        "name": NAME_SCHEMA,
                        "version": _COUNT,
                        "size": _COUNT,
                        "reason": {"type": "string"},
                        "at": {"type": "number"},
                    },
                    ("folder", "name", "version", "size", "reason", "at"),
                ),
            ]
        },
    },
    ("bytes", "entries", "max_bytes", "free_floor", "downloads", "last_uncached"),
)

_UPSTREAM_ERRORS = (
    ErrorCode.UNAUTHORIZED,
    ErrorCode.NOT_FOUND,
    ErrorCode.UPSTREAM_BAD_DATA,
    ErrorCode.UPSTREAM_UNAVAILABLE,
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
                "items": {
                    "type": "array",
                    "items": obj(
                        {
                            "filename": NAME_SCHEMA,
                            "version": _COUNT,
                            "plaintext_size": _COUNT,
                            "big_size": _COUNT,
                            "updated_at": _TIME,
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
                    ),
                },
            },
            ("folder", "items"),
        ),
        errors=(ErrorCode.BAD_REQUEST, *_UPSTREAM_ERRORS),
    ),
    MethodSpec(
        "cache_list",
        cache_list,
        "The cache's entries, most recently used first, and the bytes held.",
        result=obj(
            {
                "entries": {
                    "type": "array",
                    "items": obj(
                        {
                            **_ENTRY["properties"],
                            "last_used": {"type": "number"},
                            "pinned": {"type": "boolean"},
                            "in_use": {"type": "boolean"},
                            "lease_expires": _TIME,
                        },
                        (*_ENTRY["required"], "last_used", "pinned", "in_use", "lease_expires"),
                    ),
                },
                "bytes": _COUNT,
                "max_bytes": _COUNT,
                "free_floor": _COUNT,
            },
            ("entries", "bytes", "max_bytes", "free_floor"),
        ),
    ),
    MethodSpec(
        "pull",
        pull,
        "Fetch a resource's current version into the cache, every byte authenticated;"
        " no plaintext is handed out.",
        params=obj({**_RESOURCE, "pin": {"type": "boolean", "default": False}}, ("filename",)),
        result=obj(
            {
                **_ENTRY["properties"],
                "from_cache": {"type": "boolean"},
                "pinned": {"type": "boolean"},
            },
            (*_ENTRY["required"], "from_cache", "pinned"),
        ),
        errors=(ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE, *_UPSTREAM_ERRORS),
    ),
    MethodSpec(
        "evict",
        evict,
        "Drop every cached version of a resource; Conflict while one is in use.",
        params=obj(_RESOURCE, ("filename",)),
        result=obj(_EVICTED, ("evicted", "bytes")),
        errors=(ErrorCode.BAD_REQUEST, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT),
    ),
    MethodSpec(
        "prune",
        prune,
        "Evict unpinned entries not in use, least recently used first, down to max_bytes.",
        params=obj({"max_bytes": _COUNT}, ("max_bytes",)),
        result=obj({**_EVICTED, "held": _COUNT}, ("evicted", "bytes", "held")),
    ),
    MethodSpec(
        "pin",
        pin,
        "Pin a cached resource (never evicted) or unpin it.",
        params=obj({**_RESOURCE, "pinned": {"type": "boolean", "default": True}}, ("filename",)),
        result=obj(
            {"folder": NAME_SCHEMA, "filename": NAME_SCHEMA, "pinned": {"type": "boolean"}},
            ("folder", "filename", "pinned"),
        ),
        errors=(ErrorCode.BAD_REQUEST, ErrorCode.NOT_FOUND),
    ),
)
