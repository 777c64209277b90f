"""``load_memfd``: a resource's plaintext in a sealed memfd, passed back with the answer.

The method sizes a memfd from the upstream's answer, has ``load`` decrypt
straight into its mapping, seals it (no write, shrink, grow, or seal change)
and hands the fd to the transport, which sends it with the response line
(SCM_RIGHTS) and closes its own copy. On any error the memfd is closed unsent:
nothing of a failed load leaves the daemon. The pages are charged to cofferd's
memory cgroup; ``memfd_max_bytes`` caps one call.
"""

from __future__ import annotations

from typing import Any

from cofferd.resources import service
from cofferd.resources.memfd import MemfdSink
from cofferd.rpc.dispatch.context import Call
from cofferd.rpc.dispatch.params import check_name
from cofferd.rpc.dispatch.spec import MethodSpec, obj
from cofferd.rpc.methods.resources import LOAD_ERRORS, LOAD_PARAMS, LOADED, loaded, services


def load_memfd(call: Call, /, filename: object, folder: object = "models") -> dict[str, Any]:
    folder_ = check_name(folder, "folder")
    name = check_name(filename, "filename")
    app = services(call)
    sink = MemfdSink(f"coffer:{folder_}/{name}", app.settings.memfd_max_bytes)
    try:
        with app.notifier.working(f"loading {folder_}/{name} into a memfd"):
            result = service.load(
                app.api_client(), app.managed, folder_, name, sink, resolve=app.field.resolve
            )
        call.reply_fds.append(sink.seal())
    finally:
        sink.close()
    return loaded(result)


SPECS: tuple[MethodSpec, ...] = (
    MethodSpec(
        "load_memfd",
        load_memfd,
        "The plaintext of a resource's current version in a sealed memfd, returned as an fd.",
        params=LOAD_PARAMS,
        result=obj(LOADED, ("folder", "filename", "version", "size", "from_cache")),
        errors=LOAD_ERRORS,
        fd="returns",
        traffic="out",
    ),
)
