"""The device's cache: what is cached, drop, prune, pin.

They work on the device's cache and index, never the upstream (``pull``, which
fetches into the cache, is a load: :mod:`cofferd.rpc.methods.resources`).
``evict`` of an entry in use is refused with
Conflict (the caller retries), rather than deferred: a deferred eviction
would be a promise the daemon must keep across restarts, for little gain.
"""

from __future__ import annotations

from typing import Any

from coffer.protocol import ErrorCode
from cofferd.errors import NotFound
from cofferd.resources.index import Entry
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.params import NAME_SCHEMA, check_name, count, flag
from cofferd.rpc.dispatch.spec import Audit, MethodSpec, RecordField, array, obj


def cache_list(call: Call, /) -> dict[str, Any]:
    app = call.app
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


def evict(call: Call, /, filename: object, folder: object = "models") -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    gone = call.app.managed.evict(folder_, name)
    return {"evicted": [_entry(e) for e in gone], "bytes": sum(e.size for e in gone)}


def prune(call: Call, /, max_bytes: object) -> dict[str, Any]:
    app = call.app
    gone = app.managed.prune(count(max_bytes, "max_bytes"))
    return {
        "evicted": [_entry(e) for e in gone],
        "bytes": sum(e.size for e in gone),
        "held": app.index.total_size(),
    }


def pin(
    call: Call, /, filename: object, folder: object = "models", pinned: object = True
) -> dict[str, Any]:
    pinned_ = flag(pinned, "pinned")
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    app = call.app
    if pinned_ and not any(e.name == name for e in app.index.entries(folder_)):
        raise NotFound(f"{folder_}/{name} is not in the cache; pull it with pin set")
    app.index.set_pinned(folder_, name, pinned_)
    return {"folder": folder_, "filename": name, "pinned": pinned_}


def _entry(e: Entry) -> dict[str, Any]:
    return {"folder": e.folder, "filename": e.name, "version": e.version, "size": e.size}


_COUNT = {"type": "integer", "minimum": 0}
_TIME = {"type": ["number", "null"]}
_RESOURCE = {"filename": NAME_SCHEMA, "folder": {**NAME_SCHEMA, "default": "models"}}
_ENTRY = obj(
    {"folder": NAME_SCHEMA, "filename": NAME_SCHEMA, "version": _COUNT, "size": _COUNT},
    ("folder", "filename", "version", "size"),
)
_RESOURCE_PARAMS: dict[RecordField, str] = {"folder": "folder", "name": "filename"}
_EVICTED = {"evicted": array(_ENTRY), "bytes": _COUNT}

SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "cache_list",
        cache_list,
        "The cache's entries, most recently used first, and the bytes held.",
        result=obj(
            {
                "entries": array(
                    obj(
                        {
                            **_ENTRY["properties"],
                            "last_used": {"type": "number"},
                            "pinned": {"type": "boolean"},
                            "in_use": {"type": "boolean"},
                            "lease_expires": _TIME,
                        },
                        (*_ENTRY["required"], "last_used", "pinned", "in_use", "lease_expires"),
                    )
                ),
                "bytes": _COUNT,
                "max_bytes": _COUNT,
                "free_floor": _COUNT,
            },
            ("entries", "bytes", "max_bytes", "free_floor"),
        ),
    ),
    MethodSpec(
        "evict",
        evict,
        "Drop every cached version of a resource; Conflict while one is in use.",
        params=obj(_RESOURCE, ("filename",)),
        result=obj(_EVICTED, ("evicted", "bytes")),
        errors=(
            ErrorCode.BAD_REQUEST,
            ErrorCode.NOT_FOUND,
            ErrorCode.CONFLICT,
            ErrorCode.STATE_UNWRITABLE,
        ),
        access="operator",
        audit=Audit("c2db680e042c418e8e2f8dd139ce51b9", _RESOURCE_PARAMS, {"bytes": "bytes"}),
    ),
    MethodSpec(
        "prune",
        prune,
        "Evict unpinned entries not in use, least recently used first, down to max_bytes.",
        params=obj({"max_bytes": _COUNT}, ("max_bytes",)),
        result=obj({**_EVICTED, "held": _COUNT}, ("evicted", "bytes", "held")),
        errors=(ErrorCode.STATE_UNWRITABLE,),
        access="operator",
        audit=Audit("cc973c0a4c7b4c95a8d814dba54be55d", result={"bytes": "bytes"}),
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
        errors=(ErrorCode.BAD_REQUEST, ErrorCode.NOT_FOUND, ErrorCode.STATE_UNWRITABLE),
        access="operator",
        audit=Audit(
            "b6dc153bbbf7443d8e924d5defe674d8",
            _RESOURCE_PARAMS,
            {"folder": "folder", "name": "filename"},
        ),
    ),
)
