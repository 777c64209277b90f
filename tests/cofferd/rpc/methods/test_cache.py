"""The cache methods and status' cache member: cofferd as a process, the real upstream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jsonschema
import pytest

from coffer.protocol import ErrorCode
from cofferd.errors import BadName, InvalidParams, NotFound
from cofferd.rpc.table import TABLE
from fixtures.daemon import CofferdProcess, load_via_pipe, upload_via_pipe
from fixtures.upstream import Upstream

MiB = 1 << 20
SPECS = {spec.name: spec for spec in TABLE}


@pytest.fixture
def daemon(cofferd: Callable[..., CofferdProcess], upstream: Upstream) -> CofferdProcess:
    # A small cap: three 2 MiB resources do not fit together.
    d = cofferd(env={"COFFER_CACHE_MAX_BYTES": str(5 * MiB), "COFFER_CACHE_MIN_FREE_BYTES": "0"})
    account = upstream.publisher
    assert d.call("login", {"email": account.email, "password": account.password})["result"]
    return d


def ok(daemon: CofferdProcess, method: str, params: dict[str, Any] | None = None) -> Any:
    """Call, expect a result, and check it against the method table's schema."""
    response = daemon.call(method, params or {})
    assert "result" in response, response
    jsonschema.validate(response["result"], SPECS[method].result)
    return response["result"]


def error(daemon: CofferdProcess, method: str, params: dict[str, Any]) -> int:
    response = daemon.call(method, params)
    assert "error" in response, response
    assert response["error"]["data"]["detail"]
    return int(response["error"]["code"])


def publish(daemon: CofferdProcess, name: str, data: bytes) -> None:
    with daemon.connect() as sock:
        done = upload_via_pipe(sock, {"filename": name, "size": len(data)}, data)
    assert done["result"]["status"] == "ok"
    daemon.sign(done["result"])


def test_list_pull_cache_list_evict_prune(daemon: CofferdProcess) -> None:
    blobs = {name: os.urandom(2 * MiB) for name in ("a.bin", "b.bin", "c.bin")}
    for name, data in blobs.items():
        publish(daemon, name, data)
    listed = ok(daemon, "list", {"folder": "models"})
    assert [(i["filename"], i["cached"]) for i in listed["items"]] == [
        ("a.bin", False),
        ("b.bin", False),
        ("c.bin", False),
    ]
    assert ok(daemon, "list", {"folder": "empty"}) == {"folder": "empty", "items": []}

    pulled = ok(daemon, "pull", {"filename": "a.bin", "pin": True})
    assert (pulled["from_cache"], pulled["pinned"]) == (False, True)
    assert ok(daemon, "pull", {"filename": "a.bin"})["from_cache"] is True
    ok(daemon, "pull", {"filename": "b.bin"})
    # c does not fit beside a (pinned) and b: b, the LRU unpinned one, goes.
    with daemon.connect() as sock:
        data, _ = load_via_pipe(sock, {"filename": "c.bin"})
    assert data == blobs["c.bin"]
    entries = ok(daemon, "cache_list")["entries"]
    assert sorted((e["filename"], e["pinned"]) for e in entries) == [
        ("a.bin", True),
        ("c.bin", False),
    ]
    assert all(e["lease_expires"] is None and not e["in_use"] for e in entries)
    assert [i["cached"] for i in ok(daemon, "list")["items"]] == [True, False, True]

    status = ok(daemon, "status")["cache"]
    assert (status["entries"], status["max_bytes"]) == (2, 5 * MiB)
    assert status["last_uncached"] is None

    pruned = ok(daemon, "prune", {"max_bytes": 0})
    assert [e["filename"] for e in pruned["evicted"]] == ["c.bin"]  # a is pinned
    assert ok(daemon, "pin", {"filename": "a.bin", "pinned": False})["pinned"] is False
    gone = ok(daemon, "evict", {"filename": "a.bin"})
    assert [e["filename"] for e in gone["evicted"]] == ["a.bin"]
    assert ok(daemon, "cache_list")["entries"] == []
    assert error(daemon, "evict", {"filename": "a.bin"}) == ErrorCode.NOT_FOUND
    assert error(daemon, "pin", {"filename": "a.bin"}) == ErrorCode.NOT_FOUND


def test_pull_that_cannot_fit_and_bad_params(daemon: CofferdProcess) -> None:
    publish(daemon, "huge.bin", os.urandom(6 * MiB))
    code = error(daemon, "pull", {"filename": "huge.bin", "pin": True})
    assert code == ErrorCode.TOO_LARGE
    assert ok(daemon, "cache_list")["entries"] == []
    last = ok(daemon, "status")["cache"]["last_uncached"]
    assert last["name"] == "huge.bin"
    assert "cache_max_bytes" in last["reason"]
    # A load still works: it streams through.
    with daemon.connect() as sock:
        data, response = load_via_pipe(sock, {"filename": "huge.bin"})
    assert len(data) == 6 * MiB
    assert response["result"]["size"] == 6 * MiB
    assert error(daemon, "prune", {"max_bytes": -1}) == ErrorCode.INVALID_PARAMS
    assert error(daemon, "pull", {"filename": "huge.bin", "pin": "yes"}) == ErrorCode.INVALID_PARAMS
    assert error(daemon, "list", {"folder": "../x"}) == ErrorCode.BAD_REQUEST
    assert error(daemon, "pull", {"filename": "nope"}) == ErrorCode.NOT_FOUND


def coffer(daemon: CofferdProcess, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "coffer.cli", "--socket", str(daemon.socket_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cli(daemon: CofferdProcess) -> None:
    publish(daemon, "m.bin", os.urandom(MiB))
    assert "m.bin" in coffer(daemon, "ls")
    assert "downloaded, verified, pinned" in coffer(daemon, "pull", "m.bin", "--pin")
    table = coffer(daemon, "cache", "ls")
    assert "models/m.bin" in table
    assert "yes" in table
    listed = json.loads(coffer(daemon, "--json", "ls", "models"))
    assert listed["items"][0]["cached"] is True
    coffer(daemon, "cache", "unpin", "m.bin")
    assert "evicted 1 entries" in coffer(daemon, "cache", "prune", "--max-bytes", "0")
    assert json.loads(coffer(daemon, "--json", "cache", "ls"))["entries"] == []


# -- unit tests against fake services (conftest.py) ----------------------------


def test_cache_list_shows_entries_pins_use_and_leases(app, invoke) -> None:
    app.add_entry("a.bin", size=5, pinned=True)
    app.add_entry("b.bin", size=7)
    app.managed.in_use_names.add("b.bin")
    app.index.put_record("models", "a.bin", 1, 99.0, b"sealed")
    got = invoke("cache_list")
    by_name = {e["filename"]: e for e in got["entries"]}
    assert (by_name["a.bin"]["pinned"], by_name["a.bin"]["in_use"]) == (True, False)
    assert (by_name["b.bin"]["pinned"], by_name["b.bin"]["in_use"]) == (False, True)
    assert by_name["a.bin"]["lease_expires"] == 99.0
    assert by_name["b.bin"]["lease_expires"] is None
    assert got["bytes"] == 12


def test_evict_and_prune_answer_what_went(app, invoke) -> None:
    app.add_entry("a.bin", size=5)
    got = invoke("evict", filename="a.bin")
    assert got == {
        "evicted": [{"folder": "models", "filename": "a.bin", "version": 1, "size": 5}],
        "bytes": 5,
    }
    assert app.managed.evicted == [("models", "a.bin")]
    pruned = invoke("prune", max_bytes=0)
    assert (pruned["bytes"], pruned["held"]) == (5, 5)
    assert app.managed.pruned == [0]
    for bad in (-1, "1", True):
        with pytest.raises(InvalidParams):
            invoke("prune", max_bytes=bad)


def test_pin_needs_the_entry_and_unpin_does_not(app, invoke) -> None:
    with pytest.raises(NotFound, match="pull it with pin set"):
        invoke("pin", filename="a.bin")
    app.add_entry("a.bin")
    assert invoke("pin", filename="a.bin")["pinned"] is True
    assert app.index.is_pinned("models", "a.bin")
    assert invoke("pin", filename="a.bin", pinned=False)["pinned"] is False
    assert not app.index.is_pinned("models", "a.bin")
    with pytest.raises(InvalidParams):
        invoke("pin", filename="a.bin", pinned=1)
    with pytest.raises(BadName):
        invoke("evict", filename="a/b")
