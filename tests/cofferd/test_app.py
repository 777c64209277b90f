"""The App: the services every method sees, and the one API client it owns."""

from __future__ import annotations

import dataclasses
import threading
import typing
from pathlib import Path

from coffer.protocol import ErrorCode
from cofferd.app import App, build_dispatcher
from cofferd.notify import Notifier
from cofferd.observe.metrics import coffer_registry
from cofferd.resources.upstream import ApiClient
from cofferd.rpc.dispatch.context import Call, PeerCred
from cofferd.rpc.dispatch.services import Services, UnlockService
from cofferd.rpc.table import TABLE
from cofferd.settings import Settings


def make_app(tmp_path: Path) -> App:
    settings = Settings(
        upstream_url="http://127.0.0.1:9",
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
    )
    return App(settings, Notifier.from_environ({}))


def test_one_client_per_app_even_on_a_racy_first_use(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    got: list[ApiClient] = []
    barrier = threading.Barrier(16)

    def first_use() -> None:
        barrier.wait()
        got.append(app.api_client())

    threads = [threading.Thread(target=first_use) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 16
    assert all(c is got[0] for c in got)
    assert app.unlock is not None
    app.close()
    assert app.api_client() is not got[0]  # closed and forgotten: a later use builds anew
    app.close()


def test_the_app_has_every_member_methods_may_use(tmp_path: Path) -> None:
    # mypy never sees the tests: this checks at run time what the Protocol
    # promises, each member present and of the declared type.
    app = make_app(tmp_path)
    members = [name for name in vars(Services) if not name.startswith("_")]
    assert {"settings", "managed", "field", "api_client", "unlock"} <= set(members)
    for name in members:
        declared = getattr(Services, name)
        got = getattr(app, name, None)
        if isinstance(declared, property):
            kind = typing.get_type_hints(declared.fget)["return"]
            assert got is not None, name
            if kind is UnlockService:
                for need in ("state", "engine_checked_at", "start", "status"):
                    assert hasattr(got, need), (name, need)
            else:
                assert isinstance(got, kind), (name, type(got))
        else:
            assert callable(got), name
            kind = typing.get_type_hints(declared)["return"]
            assert isinstance(got(), kind), name
    app.close()


def test_the_dispatcher_keeps_operator_methods_for_login_uids(tmp_path: Path) -> None:
    settings = make_app(tmp_path).settings
    operator, other = 4321, 1000
    settings = dataclasses.replace(settings, login_uids=(operator,))
    app = App(settings, Notifier.from_environ({}))
    registry = coffer_registry()
    dispatcher = build_dispatcher(settings, registry=registry)
    assert dispatcher.names == sorted(spec.name for spec in TABLE)
    line = b'{"jsonrpc": "2.0", "method": "logout", "id": 1}'

    refused = dispatcher.handle(line, Call(app, PeerCred(pid=1, uid=other, gid=1)))
    assert refused is not None
    assert refused["error"]["code"] == ErrorCode.FORBIDDEN
    assert "login_uids" in refused["error"]["data"]["detail"]

    done = dispatcher.handle(line, Call(app, PeerCred(pid=1, uid=operator, gid=1)))
    assert done is not None
    assert done["result"] == {"status": "ok", "records_erased": 0}
    # The observer is wired: both calls are counted by outcome.
    samples = registry.snapshot()["coffer_calls_total"]["samples"]
    outcomes = {s["labels"]["outcome"]: s["value"] for s in samples}
    assert outcomes == {"forbidden": 1, "ok": 1}
    app.close()
