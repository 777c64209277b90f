"""The dispatcher: who may call what, and the fields it takes for audit and metrics."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from coffer.protocol import ErrorCode
from cofferd.rpc.dispatch.context import Call, PeerCred
from cofferd.rpc.dispatch.dispatcher import Dispatcher
from cofferd.rpc.dispatch.spec import MethodSpec, obj
from fixtures.daemon import CofferdProcess, upload_via_pipe
from fixtures.upstream import Upstream

OPERATOR, MEMBER = 4321, 1000
RAN: list[str] = []


def _ran(name: str) -> Callable[..., dict[str, Any]]:
    def method(call: Call, /, **params: Any) -> dict[str, Any]:
        RAN.append(name)
        return {"done": True}

    return method


SPECS = (
    MethodSpec("open", _ran("open"), "anyone", result=obj({"done": {}})),
    MethodSpec("wipe", _ran("wipe"), "operators", result=obj({"done": {}}), access="operator"),
    MethodSpec(
        "fetch",
        lambda call, /, pin=False: _ran("fetch")(call),
        "anyone; pinning is an operator's",
        params=obj({"pin": {"type": "boolean", "default": False}}),
        result=obj({"done": {}}),
        operator_params=("pin",),
    ),
)


def call(
    dispatcher: Dispatcher, uid: int, method: str, params: dict[str, Any] | None = None
) -> Any:
    line = json.dumps({"jsonrpc": "2.0", "method": method, "params": params or {}, "id": 1})
    return dispatcher.handle(line.encode(), Call(None, PeerCred(pid=1, uid=uid, gid=1)))


def test_an_operators_method_is_refused_to_others_before_it_runs() -> None:
    dispatcher = Dispatcher(SPECS, operators={OPERATOR})
    RAN.clear()
    refused = call(dispatcher, MEMBER, "wipe")
    assert refused["error"]["code"] == ErrorCode.FORBIDDEN
    assert refused["error"]["message"] == "Forbidden"
    assert f"uid {MEMBER} may not call wipe" in refused["error"]["data"]["detail"]
    assert RAN == []
    assert call(dispatcher, OPERATOR, "wipe")["result"] == {"done": True}
    assert call(dispatcher, MEMBER, "open")["result"] == {"done": True}
    assert RAN == ["wipe", "open"]


def test_an_operators_param_guards_only_that_use() -> None:
    dispatcher = Dispatcher(SPECS, operators={OPERATOR})
    RAN.clear()
    assert call(dispatcher, MEMBER, "fetch")["result"] == {"done": True}
    assert call(dispatcher, MEMBER, "fetch", {"pin": False})["result"] == {"done": True}
    refused = call(dispatcher, MEMBER, "fetch", {"pin": True})
    assert refused["error"]["code"] == ErrorCode.FORBIDDEN
    assert "fetch with pin" in refused["error"]["data"]["detail"]
    assert call(dispatcher, OPERATOR, "fetch", {"pin": True})["result"] == {"done": True}
    assert RAN == ["fetch", "fetch", "fetch"]


def test_without_operators_nobody_may_call_an_operators_method() -> None:
    dispatcher = Dispatcher(SPECS)
    for uid in (0, os.getuid(), OPERATOR):
        assert call(dispatcher, uid, "wipe")["error"]["code"] == ErrorCode.FORBIDDEN


def test_library_errors_get_the_tables_message_and_a_detail() -> None:
    dispatcher = Dispatcher(SPECS)
    unknown = call(dispatcher, MEMBER, "nope")["error"]
    assert (unknown["code"], unknown["message"]) == (ErrorCode.METHOD_NOT_FOUND, "Method not found")
    assert unknown["data"]["detail"] == "there is no method 'nope'"
    wrong = call(dispatcher, MEMBER, "fetch", {"x": 1})["error"]
    assert (wrong["code"], wrong["message"]) == (ErrorCode.INVALID_PARAMS, "Invalid params")


# A caller as a stdlib-only process of another uid: one request, one answer line.
_CALLER = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
print(s.makefile().readline())
"""
NOBODY = 65534
_PYTHON = ("/usr/bin/python3", "-I", "-S", "-c")


def as_member(daemon: CofferdProcess, method: str, params: dict[str, Any]) -> Any:
    """``method`` called by uid nobody in the socket's group: a member, not an operator."""
    for path in (daemon.base.parent, daemon.base):
        path.chmod(0o711)  # traversable, still not listable
    request = {"jsonrpc": "2.0", "method": method, "params": params, "id": 1}
    done = subprocess.run(
        [
            "/usr/bin/python3",
            "-I",
            "-S",
            "-c",
            _CALLER,
            str(daemon.socket_path),
            json.dumps(request),
        ],
        user=NOBODY,
        group=daemon.socket_path.stat().st_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd="/",
    )
    return json.loads(done.stdout)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a caller as another uid")
def test_a_group_member_cannot_change_state_for_every_caller(
    cofferd: Callable[..., CofferdProcess], upstream: Upstream
) -> None:
    daemon = cofferd()
    account = upstream.publisher
    assert daemon.call("login", {"email": account.email, "password": account.password})["result"]
    with daemon.connect() as sock:
        daemon.sign(upload_via_pipe(sock, {"filename": "kept.bin", "size": 3}, b"abc")["result"])
    assert daemon.call("pull", {"filename": "kept.bin", "pin": True})["result"]["pinned"]

    attempts = [
        ("logout", {}),
        ("evict", {"filename": "kept.bin"}),
        ("prune", {"max_bytes": 0}),
        ("pin", {"filename": "kept.bin", "pinned": False}),
        ("pull", {"filename": "kept.bin", "pin": True}),
        ("login", {"email": account.email, "password": account.password}),
    ]
    for method, params in attempts:
        answer = as_member(daemon, method, params)
        assert answer["error"]["code"] == ErrorCode.FORBIDDEN, (method, answer)
        assert f"uid {NOBODY} may not call {method}" in answer["error"]["data"]["detail"]

    # Nothing changed for anyone: still logged in, the entry cached and pinned.
    assert daemon.call("status")["result"]["authenticated"] is True
    entries = daemon.call("cache_list")["result"]["entries"]
    assert [(e["filename"], e["pinned"]) for e in entries] == [("kept.bin", True)]
    # What is not an operator's stays open to the member.
    assert as_member(daemon, "pull", {"filename": "kept.bin"})["result"]["from_cache"] is True
    assert as_member(daemon, "load", {"filename": "kept.bin"})["result"]["size"] == 3
