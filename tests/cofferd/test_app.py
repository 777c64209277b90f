"""The App: the services every method sees, and the one API client it owns."""

from __future__ import annotations

import threading
from pathlib import Path

from cofferd.app import App, build_dispatcher
from cofferd.notify import Notifier
from cofferd.resources.upstream import ApiClient
from cofferd.rpc.dispatch.services import Services
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


def test_the_app_is_what_methods_see(tmp_path: Path) -> None:
    services: Services = make_app(tmp_path)  # mypy checks the App against the Protocol
    assert services.settings.upstream_url == "http://127.0.0.1:9"


def test_the_dispatcher_serves_exactly_the_table() -> None:
    assert build_dispatcher().names == sorted(spec.name for spec in TABLE)
