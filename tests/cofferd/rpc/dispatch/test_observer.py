"""Finished calls: one log line each, audit records for audited methods, metrics."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from coffer.client import Client
from coffer.errors import NotFound as NotFoundAnswer
from coffer.errors import UpstreamUnavailable
from coffer.protocol import ErrorCode
from cofferd.errors import NotFound
from cofferd.observe.audit import AuditLog
from cofferd.observe.calllog import CallLog
from cofferd.observe.journal import JournalSender
from cofferd.observe.metrics import coffer_registry
from cofferd.rpc.dispatch.context import Call, PeerCred
from cofferd.rpc.dispatch.dispatcher import Dispatcher
from cofferd.rpc.dispatch.observer import CallObserver, outcome_label
from cofferd.rpc.dispatch.spec import Audit, MethodSpec, obj
from fixtures.daemon import CofferdProcess
from fixtures.journald import FakeJournald
from fixtures.upstream import Upstream

PEER = PeerCred(pid=4242, uid=1234, gid=5678)


def _login(call: Call, /, email: object, password: object) -> dict[str, Any]:
    if password != "right":
        raise NotFound("no such account")
    return {"status": "ok"}


def _load(call: Call, /, filename: object, folder: object = "models") -> dict[str, Any]:
    return {"folder": folder, "filename": filename, "version": 3, "size": 11, "from_cache": True}


LOGIN_ID = "6e1144617e614150921f039e5557b6f7"
SPECS = (
    MethodSpec(
        "login",
        _login,
        "log in",
        params=obj({"email": {}, "password": {}}),
        result=obj({"status": {}}),
        audit=Audit(LOGIN_ID),
    ),
    MethodSpec(
        "load",
        _load,
        "load",
        params=obj({"filename": {}, "folder": {"default": "models"}}),
        result=obj({"folder": {}, "filename": {}, "version": {}, "size": {}, "from_cache": {}}),
        audit=Audit(
            "57ceaf16529b48b6a928cb96acdcfad8",
            {"folder": "folder", "name": "filename"},
            {"folder": "folder", "name": "filename", "version": "version", "bytes": "size"},
        ),
        traffic=("out", "size"),
        cache_hit="from_cache",
    ),
    MethodSpec("health", lambda call: {"status": "ok"}, "health"),
)


def request(method: str, params: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1}
    if params is not None:
        body["params"] = params
    return json.dumps(body).encode()


@pytest.fixture
def journald(tmp_path: Path) -> Any:
    fake = FakeJournald(tmp_path / "journal.sock")
    yield fake
    fake.close()


def test_an_audited_call_goes_to_the_journal_with_the_peer_and_no_secret(
    journald: FakeJournald,
) -> None:
    sender = JournalSender(journald.path)
    registry = coffer_registry()
    observer = CallObserver(SPECS, journal=AuditLog(sender), registry=registry)
    dispatcher = Dispatcher(SPECS, observer)

    ok = dispatcher.handle(
        request("login", {"email": "a@b.c", "password": "right"}), Call(None, PEER)
    )
    assert ok is not None
    assert ok["result"] == {"status": "ok"}
    entry = journald.receive()
    assert entry["MESSAGE_ID"] == LOGIN_ID.encode()
    assert entry["COFFER_METHOD"] == b"login"
    assert entry["COFFER_OUTCOME"] == b"ok"
    assert (entry["COFFER_UID"], entry["COFFER_GID"], entry["COFFER_PID"]) == (
        b"1234",
        b"5678",
        b"4242",
    )

    dispatcher.handle(request("login", {"email": "a@b.c", "password": "hunter2"}), Call(None, PEER))
    refused = journald.receive()
    assert refused["COFFER_OUTCOME"] == b"error"
    assert refused["COFFER_ERROR_CODE"] == str(int(ErrorCode.NOT_FOUND)).encode()
    assert refused["PRIORITY"] == b"4"
    for value in (*entry.values(), *refused.values()):
        assert b"hunter2" not in value
        assert b"right" not in value
        assert b"a@b.c" not in value
    sender.close()


def test_the_resource_comes_from_the_params_and_the_result(journald: FakeJournald) -> None:
    sender = JournalSender(journald.path)
    registry = coffer_registry()
    dispatcher = Dispatcher(SPECS, CallObserver(SPECS, journal=AuditLog(sender), registry=registry))

    dispatcher.handle(request("load", {"filename": "m.bin"}), Call(None, PEER))
    entry = journald.receive()
    assert entry["COFFER_FOLDER"] == b"models"  # the default, as the result says
    assert entry["COFFER_NAME"] == b"m.bin"
    assert entry["COFFER_VERSION"] == b"3"
    assert entry["COFFER_BYTES"] == b"11"
    assert entry["MESSAGE"].startswith(b"load ok models/m.bin v3 11 bytes uid=1234 gid=5678")

    # A name that fails the name rule is left out rather than copied into the journal.
    dispatcher.handle(request("load", {"filename": 7}), Call(None, PEER))
    assert "COFFER_NAME" not in journald.receive()
    snapshot = registry.snapshot()
    assert snapshot["coffer_bytes_out_total"]["samples"][0]["value"] == 11 + 11
    assert snapshot["coffer_cache_hits_total"]["samples"][0]["value"] == 2
    sender.close()


def test_calls_are_counted_by_method_and_outcome() -> None:
    registry = coffer_registry()
    dispatcher = Dispatcher(SPECS, CallObserver(SPECS, registry=registry))
    for _ in range(3):
        dispatcher.handle(request("health"), Call(None, PEER))
    dispatcher.handle(request("login", {"email": "x", "password": "no"}), Call(None, PEER))
    dispatcher.handle(request("nope"), Call(None, PEER))
    dispatcher.handle(b"{oops", Call(None, PEER))
    calls = {
        (s["labels"]["method"], s["labels"]["outcome"]): s["value"]
        for s in registry.snapshot()["coffer_calls_total"]["samples"]
    }
    assert calls == {
        ("health", "ok"): 3,
        ("login", "not_found"): 1,
        ("-", "method_not_found"): 1,
        ("-", "parse_error"): 1,
    }
    durations = registry.snapshot()["coffer_call_duration_seconds"]["samples"]
    assert {s["labels"]["method"]: s["count"] for s in durations}["health"] == 3
    assert outcome_label(None, hung_up=True) == "hung_up"
    assert outcome_label(599) == "error"


def test_one_line_per_call_without_journald() -> None:
    r, w = os.pipe()
    log = CallLog(w, journal=True, linger=0).start()
    dispatcher = Dispatcher(SPECS, CallObserver(SPECS, call_log=log))
    dispatcher.handle(request("health"), Call(None, PEER))
    dispatcher.handle(request("load", {"filename": "m.bin"}), Call(None, PEER))
    dispatcher.handle(request("login", {"email": "x", "password": "secret"}), Call(None, PEER))
    log.stop()
    os.close(w)
    with open(r, "rb") as f:
        lines = f.read().decode().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("<6>cofferd.call: health ok uid=1234 gid=5678 pid=4242 ")
    assert lines[1].startswith("<6>cofferd.audit: load ok models/m.bin v3 11 bytes uid=1234 ")
    assert lines[2].startswith("<4>cofferd.audit: login error 404 uid=1234 ")
    assert "secret" not in "".join(lines)


def test_the_daemon_audits_counts_and_serves_metrics(
    cofferd: Callable[..., CofferdProcess], upstream: Upstream, tmp_path: Path
) -> None:
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    env = {"COFFER_METRICS_TEXTFILE_DIR": str(textfiles), "COFFER_METRICS_INTERVAL": "0.2"}
    daemon = cofferd(env=env)
    account = upstream.publisher
    with Client(daemon.socket_path) as client:
        client.login(account.email, account.password)
        daemon.sign(client.upload_bytes("m.bin", "models", b"hello world"))
        assert client.load_bytes("m.bin") == b"hello world"
        assert client.load_bytes("m.bin") == b"hello world"
        with pytest.raises(NotFoundAnswer):
            client.load_bytes("missing.bin")
        snapshot = client.call("metrics")

    calls = {
        (s["labels"]["method"], s["labels"]["outcome"]): s["value"]
        for s in snapshot["coffer_calls_total"]["samples"]
    }
    assert calls[("load", "ok")] == 2
    assert calls[("load", "not_found")] == 1
    assert calls[("upload", "ok")] == 1
    value = {
        name: m["samples"][0]["value"]
        for name, m in snapshot.items()
        if m["type"] != "histogram" and len(m["samples"]) == 1
    }
    assert value["coffer_bytes_out_total"] == 22
    assert value["coffer_bytes_in_total"] == 11
    assert value["coffer_cache_hits_total"] + value["coffer_cache_misses_total"] == 2
    assert value["coffer_upstream_reachable"] == 1
    assert abs(value["coffer_upstream_last_contact_timestamp_seconds"] - time.time()) < 120

    # One line per call: the audited ones are their audit record, with the resource.
    deadline = time.monotonic() + 10
    while "missing.bin" not in daemon.stderr_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = daemon.stderr_text()
    uid = os.getuid()
    assert f"cofferd.audit: load ok models/m.bin v1 11 bytes uid={uid} " in text
    assert f"cofferd.audit: load error 404 models/missing.bin uid={uid} " in text
    assert "cofferd.call: load" not in text
    assert account.password not in text

    # The textfile, read by prometheus_client's parser (node_exporter's format).
    prom = textfiles / "cofferd.prom"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if prom.exists() and 'method="upload"' in prom.read_text():
            break
        time.sleep(0.1)
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    samples = {
        (s.labels.get("method"), s.labels.get("outcome")): s.value
        for s in families["coffer_calls"].samples
        if s.name == "coffer_calls_total"
    }
    assert samples[("upload", "ok")] == 1


def test_an_unreachable_upstream_shows_in_the_metrics(
    cofferd: Callable[..., CofferdProcess],
) -> None:
    daemon = cofferd(upstream_url="http://127.0.0.1:9")  # discard: nobody listens
    with Client(daemon.socket_path) as client:
        with pytest.raises(UpstreamUnavailable):
            client.login("a@example.org", "pw")
        snapshot = client.call("metrics")
    assert snapshot["coffer_upstream_reachable"]["samples"][0]["value"] == 0
    assert snapshot["coffer_upstream_last_contact_timestamp_seconds"]["samples"] == []
    calls = {
        (s["labels"]["method"], s["labels"]["outcome"]): s["value"]
        for s in snapshot["coffer_calls_total"]["samples"]
    }
    assert calls[("login", "upstream_unavailable")] == 1
