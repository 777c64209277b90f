"""A fake of the daemon's services for the methods' unit tests.

Each method is a function of a :class:`Call` and its params; here its
services are plain objects that record what they were asked and answer what
a test set. The settings, the notifier, the index and the metrics registry
are the real ones (cheap, local); the upstream client, the managed cache,
the offline field and the unlock workflow are fakes. Every result is checked
against the method's result schema in the table, so a result member renamed
in one place only fails here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cofferd.errors import Unauthorized
from cofferd.field.enrollment import Enrollment
from cofferd.field.identity import DeviceIdentity, IdentityState
from cofferd.models import LoadResult, UnlockState
from cofferd.notify import Notifier
from cofferd.observe.metrics import Registry, coffer_registry
from cofferd.resources.index import INDEX_NAME, Entry, Index
from cofferd.resources.listing import Listed
from cofferd.rpc.dispatch.context import Call, PeerCred
from cofferd.rpc.table import TABLE
from cofferd.settings import Settings

SPECS = {spec.name: spec for spec in TABLE}
PEER = PeerCred(pid=42, uid=1000, gid=1000)


@dataclass
class FakeClient:
    authenticated: bool = False
    logins: list[tuple[str, str]] = field(default_factory=list)
    logouts: int = 0
    pages: dict[str, list[list[Listed]]] = field(default_factory=dict)

    subject: str | None = None

    def login(self, email: str, password: str) -> None:
        self.logins.append((email, password))
        self.authenticated = True
        self.subject = email

    def logout(self) -> None:
        self.logouts += 1
        self.authenticated = False
        self.subject = None

    def enroll(self, token: str, public_key: str, name: str | None = None) -> tuple[str, str]:
        if token != "cet_good":
            raise Unauthorized("the upstream refused the enrollment: enrollment token unknown")
        return "d_fake", "reader"

    def list_page(self, folder: str, cursor: str | None) -> tuple[list[Listed], str | None]:
        pages = self.pages.get(folder, [[]])
        at = int(cursor or 0)
        return pages[at], (str(at + 1) if at + 1 < len(pages) else None)


@dataclass
class FakeManaged:
    index: Index
    in_use_names: set[str] = field(default_factory=set)
    evicted: list[tuple[str, str]] = field(default_factory=list)
    pruned: list[int] = field(default_factory=list)

    def in_use(self, entry: Entry) -> bool:
        return entry.name in self.in_use_names

    def evict(self, folder: str, name: str) -> list[Entry]:
        self.evicted.append((folder, name))
        return [e for e in self.index.entries(folder) if e.name == name]

    def prune(self, max_bytes: int) -> list[Entry]:
        self.pruned.append(max_bytes)
        return self.index.entries()[:1]

    def status(self) -> dict[str, Any]:
        entries = self.index.entries()
        return {
            "bytes": sum(e.size for e in entries),
            "entries": len(entries),
            "max_bytes": 1 << 30,
            "free_floor": 0,
            "downloads": [],
            "last_uncached": None,
            "state_writable": True,
            "state_error": None,
        }


@dataclass
class FakeField:
    records: int = 0
    resolved: list[tuple[str, str]] = field(default_factory=list)

    def status(self) -> dict[str, Any]:
        return {
            "upstream_reachable": None,
            "mode": "online",
            "last_contact": None,
            "trusted_time": None,
            "offline_enabled": False,
            "records_persistent": False,
            "records": [],
        }

    def forget(self) -> int:
        n, self.records = self.records, 0
        return n

    def resolve(self, folder: str, name: str) -> Any:
        self.resolved.append((folder, name))
        raise AssertionError("a method test with a real resolve must replace service.load")


@dataclass
class FakeLoads:
    """The load owner (:class:`cofferd.field.loads.Loads`): ``plaintext`` into the sink."""

    plaintext: bytes = b"plaintext of a model"
    loads: list[tuple[str, str]] = field(default_factory=list)
    pulls: list[tuple[str, str]] = field(default_factory=list)

    def load(self, folder: str, name: str, sink: Any) -> LoadResult:
        self.loads.append((folder, name))
        sink.expect(name, len(self.plaintext))
        sink.write(memoryview(self.plaintext))
        return LoadResult(folder, name, 3, len(self.plaintext), True)

    def stat(self, folder: str, name: str) -> tuple[int, int]:
        return 3, len(self.plaintext)

    def pull(self, folder: str, name: str) -> LoadResult:
        self.pulls.append((folder, name))
        return LoadResult(folder, name, 2, 99, False)


@dataclass
class FakeBootLogin:
    source: str = "none"

    def login_called(self) -> None:
        self.source = "login call"

    def logged_out(self) -> None:
        self.source = "none"


@dataclass
class FakeUnlock:
    state: UnlockState = UnlockState.IDLE
    engine_checked_at: float | None = None
    started: list[tuple[str, str]] = field(default_factory=list)

    def start(self, email: str, password: str) -> dict[str, Any]:
        self.started.append((email, password))
        self.state = UnlockState.AUTHENTICATING
        return {"state": self.state.value}

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "error": None,
            "bytes_done": 0,
            "bytes_total": 0,
            "images": [],
        }


class FakeServices:
    """What :class:`cofferd.rpc.dispatch.services.Services` promises, for one test."""

    def __init__(self, tmp: Path) -> None:
        self.settings = Settings(
            upstream_url="http://127.0.0.1:9",
            cache_dir=tmp / "cache",
            state_dir=tmp / "state",
        )
        self.settings.state_dir.mkdir(parents=True)
        self.notifier = Notifier.from_environ({})
        self.index = Index(self.settings.state_dir / INDEX_NAME)
        self.managed = FakeManaged(self.index)
        self.metrics: Registry = coffer_registry()
        self.client = FakeClient()
        self.field = FakeField()
        self.loads = FakeLoads()
        self.boot_login = FakeBootLogin()
        self.unlock = FakeUnlock()
        self.identity = IdentityState(DeviceIdentity.generate())
        self.enrollment = Enrollment(
            self.settings.state_dir, self.identity, self.settings.upstream_url, None
        )
        self.enrollments = 0

    def enrolled(self) -> None:
        self.enrollments += 1

    def api_client(self) -> FakeClient:
        return self.client

    def add_entry(
        self, name: str, *, size: int = 10, version: int = 1, pinned: bool = False
    ) -> None:
        self.index.add_entry("models", name, 1, f"models/{name}.1", size, size)
        if pinned:
            self.index.set_pinned("models", name, True)


@pytest.fixture
def app(tmp_path: Path) -> FakeServices:
    return FakeServices(tmp_path)


Invoke = Callable[..., dict[str, Any]]


@pytest.fixture
def invoke(app: FakeServices) -> Invoke:
    """Call a method by name with ``app`` as its services; its result checked by its schema."""

    def run(method: str, /, *, fds: list[int] | None = None, **params: Any) -> dict[str, Any]:
        spec = SPECS[method]
        call = Call(app, PEER, fds=list(fds or []))  # type: ignore[arg-type]
        result = spec.func(call, **params)
        jsonschema.validate(result, spec.result)
        run.last_call = call  # type: ignore[attr-defined]
        return result

    return run
