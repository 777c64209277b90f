"""Two upstream replicas behind nginx: one database, one store, one pair of keys.

Each replica is a real ``coffer-upstream serve`` process on the same data dir
(its two key files) and the same real PostgreSQL database
(tests/fixtures/postgres.py); the ``store`` parameter says where the big
parts are: the local store in that dir (``postgresql-local``), or one bucket
of the real S3 server (tests/fixtures/s3.py, ``postgresql-s3``). nginx
(tests/fixtures/nginx.py) is in front, and the devices are real cofferd
processes pointed at nginx. Which replica answers is steered the way an
operator would, by reloading nginx with one replica or the other
(``Fleet.only``), and proved by each replica's own request log.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from requests.adapters import HTTPAdapter

from fixtures import trust as tuf_fixtures
from fixtures.daemon import CofferdProcess, load_via_pipe, upload_via_pipe
from fixtures.nginx import Nginx
from fixtures.postgres import Postgres
from fixtures.upstream import Account, TrustSetup, Upstream

MiB = 1 << 20
DATA = os.urandom(3 * MiB + 5)


@dataclass
class Store:
    """Where the replicas keep big parts and their database, and how a test sees the parts."""

    name: str  # local or s3
    options: dict[str, Any]  # of Upstream: serve's options and environment
    blobs: Callable[[Upstream], set[str]]  # the blob ids stored now
    database_url: str | None = None  # None: SQLite in the shared data dir


# SQLite shared by replicas on one host works too (tests/coffer_upstream/test_replicas.py
# runs two that way); a fleet's replicas share PostgreSQL.
@pytest.fixture(params=["postgresql-local", "postgresql-s3"])
def store(request: pytest.FixtureRequest) -> Store:
    database, kind = request.param.split("-")
    url = (
        request.getfixturevalue("postgres").create_database() if database == "postgresql" else None
    )
    if kind == "local":
        made = Store("local", {}, lambda up: {p.name for p in up.blob_paths()})
    else:
        server = request.getfixturevalue("s3_server")
        bucket = request.getfixturevalue("s3_bucket")

        def objects(_: Upstream) -> set[str]:
            listed = server.client().list_objects_v2(Bucket=bucket)
            return {o["Key"].rsplit("/", 1)[-1] for o in listed.get("Contents", [])}

        made = Store("s3", server.upstream_options(bucket), objects)
    if url is not None:
        made.database_url = url
        made.options = {**made.options, "database_url": url}
    return made


def prepare_database(
    url: str, data_dir: Path, trust: TrustSetup | None, *accounts: Account
) -> None:
    """The explicit steps of a PostgreSQL deployment: ``db upgrade``, the owner's root
    and targets (``trust``: the online key they name is in ``data_dir``), then the users."""
    env = {**os.environ, "COFFER_UPSTREAM_DATABASE_URL": url}
    command = [sys.executable, "-m", "coffer_upstream"]
    subprocess.run(
        [*command, "db", "upgrade", "--data-dir", str(data_dir)],
        env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    if trust is not None:
        targets = tuf_fixtures.sign(tuf_fixtures.targets_metadata(), trust.keys.targets)
        for role, data in (("root", trust.root), ("targets", targets)):
            path = data_dir.parent / f"{role}.json"
            path.write_bytes(data)
            subprocess.run(
                [*command, "trust", role, str(path), "--data-dir", str(data_dir)],
                env=env, check=True, capture_output=True, timeout=120,
            )  # fmt: skip
    for account in accounts:
        subprocess.run(
            [*command, "user", "add", account.email, "--role", account.role,
             "--data-dir", str(data_dir)],
            input=account.password + "\n", text=True,
            env=env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip


@dataclass
class Fleet:
    proxy: Nginx
    replicas: list[Upstream]
    store: Store

    def only(self, *which: int) -> None:
        """nginx sends everything to these replicas from now on."""
        self.proxy.reconfigure([self.replicas[i] for i in which])

    def marks(self) -> list[int]:
        return [len(r.log()) for r in self.replicas]

    def since(self, marks: list[int]) -> list[str]:
        """What each replica logged since ``marks``."""
        return [r.log()[m:] for r, m in zip(self.replicas, marks, strict=True)]

    def wait_logged(
        self, which: int, marks: list[int], seen: Callable[[list[tuple[str, str]]], bool]
    ) -> None:
        """Until replica ``which`` has logged what ``seen`` looks for since ``marks``: a
        replica may write its log line just after its answer went out."""
        deadline = time.monotonic() + 10
        while not seen(requests_in(self.since(marks)[which])):
            assert time.monotonic() < deadline, self.since(marks)[which]
            time.sleep(0.02)


@contextmanager
def two_replicas(
    nginx_factory: Callable[..., Nginx],
    upstream_factory: Callable[..., Upstream],
    store: Store,
    **settings: Any,
) -> Iterator[Fleet]:
    proxy = nginx_factory()
    options = {**store.options, **settings}
    if store.database_url is None:
        first = upstream_factory(public_url=proxy.url, **options)
    else:  # the template's users, in the PostgreSQL database: then serve
        first = upstream_factory(public_url=proxy.url, **{**options, "start": False})
        prepare_database(
            store.database_url, first.data_dir, first.trust, first.reader, first.publisher
        )
        first.start()
    # The second replica: the same data dir (keys, store, database), another process.
    second = Upstream(
        first.data_dir, first.reader, first.publisher, public_url=proxy.url, **options
    )
    second.log_path = first.log_path.with_name("second.log")  # a request log of its own
    second.start()
    proxy.start([first, second])
    yield Fleet(proxy, [first, second], store)
    killed = second.pid is not None and not second.running
    second.stop()
    problems = second.problems()
    if killed:  # the test killed it: its exit status is no problem, a traceback is
        problems = [p for p in problems if "exited" not in p]
    assert not problems, "; ".join(problems) + "\n" + second.log()[-4000:]


@pytest.fixture
def fleet(
    nginx_factory: Callable[..., Nginx], upstream_factory: Callable[..., Upstream], store: Store
) -> Iterator[Fleet]:
    with two_replicas(nginx_factory, upstream_factory, store) as made:
        yield made


def device(cofferd: Callable[..., CofferdProcess], proxy: Nginx, **env: str) -> CofferdProcess:
    return cofferd(upstream_url=proxy.url, env=env)


def login(daemon: CofferdProcess, account: Any) -> None:
    answer = daemon.call("login", {"email": account.email, "password": account.password})
    assert answer.get("result") == {"status": "ok"}, answer


def upload(daemon: CofferdProcess, name: str, data: bytes) -> None:
    """Upload ``data`` and sign its release (``coffer upload --sign-key``)."""
    with daemon.connect() as sock:
        answer = upload_via_pipe(sock, {"filename": name, "size": len(data)}, data)
    assert "result" in answer, answer
    daemon.sign(answer["result"])


def load(daemon: CofferdProcess, name: str) -> bytes:
    with daemon.connect() as sock:
        data, answer = load_via_pipe(sock, {"filename": name})
    assert "result" in answer, answer
    return data


def requests_in(log: str) -> list[str]:
    """``METHOD /path`` of each request a replica logged."""
    return re.findall(r"\b(GET|POST|PUT|HEAD|DELETE) (/\S*)", log)


def test_a_device_logs_in_through_one_replica_and_loads_through_the_other(
    fleet: Fleet, cofferd: Callable[..., CofferdProcess]
) -> None:
    publisher = device(cofferd, fleet.proxy)
    login(publisher, fleet.replicas[0].publisher)
    upload(publisher, "model.bin", DATA)

    reader = device(cofferd, fleet.proxy)
    fleet.only(0)
    marks = fleet.marks()
    login(reader, fleet.replicas[0].reader)
    fleet.wait_logged(0, marks, lambda r: ("POST", "/v1/login") in r)
    fleet.only(1)
    mid = fleet.marks()
    assert load(reader, "model.bin") == DATA

    resolve = ("GET", "/v1/resources/models/model.bin")
    fleet.wait_logged(1, mid, lambda r: resolve in r)
    if fleet.store.name == "local":  # the big part too, from the second's /cdn
        fleet.wait_logged(1, mid, lambda r: any(p.startswith("/cdn/") for _, p in r))
    logged_in, loaded = fleet.since(marks)[0], fleet.since(mid)[1]
    assert ("POST", "/v1/login") in requests_in(logged_in)
    assert fleet.since(mid)[0] == ""  # the first replica saw nothing of the load
    on_second = requests_in(loaded)
    assert resolve in on_second
    # The token the first replica made was good on the second: no login there.
    assert ("POST", "/v1/login") not in on_second


def test_a_publish_begins_on_one_replica_and_commits_on_the_other(fleet: Fleet) -> None:
    first = fleet.replicas[0]
    api = fleet.proxy.url
    headers = {"Authorization": f"Bearer {first.login(first.publisher)}"}
    big = os.urandom(2 * MiB + 1)
    base = f"{api}/v1/resources/shared/model.bin/uploads"

    fleet.only(0)
    marks = fleet.marks()
    begun = requests.post(base, json={}, headers=headers, timeout=30)
    assert begun.status_code == 201, begun.text
    fleet.only(1)
    put = requests.put(begun.json()["big_url"], data=big, timeout=60)
    assert put.status_code in (200, 201), put.text
    commit = requests.post(
        f"{base}/{begun.json()['upload_id']}/commit",
        json={
            "small": base64.b64encode(bytes(40)).decode(),
            "key": base64.b64encode(os.urandom(32)).decode(),
            "big_size": len(big),
            "big_sha256": hashlib.sha256(big).hexdigest(),
            "plaintext_size": len(big),
        },
        headers=headers,
        timeout=30,
    )
    assert commit.status_code in (200, 201), commit.text
    commit_path = f"/v1/resources/shared/model.bin/uploads/{begun.json()['upload_id']}/commit"
    fleet.wait_logged(1, marks, lambda r: ("POST", commit_path) in r)
    on_first, on_second = (requests_in(log) for log in fleet.since(marks))
    assert on_first == [("POST", "/v1/resources/shared/model.bin/uploads")]
    if fleet.store.name == "local":  # else the PUT went straight to the store
        assert ("PUT", urlsplit(begun.json()["big_url"]).path) in on_second
    assert ("POST", commit_path) in on_second

    # Both replicas serve the committed version, and the same bytes.
    for which in (0, 1):
        fleet.only(which)
        got = requests.get(f"{api}/v1/resources/shared/model.bin", headers=headers, timeout=30)
        assert got.json()["version"] == commit.json()["version"]
        assert requests.get(got.json()["big_url"], timeout=60).content == big


def test_a_replica_killed_mid_run_the_device_goes_on(
    fleet: Fleet, cofferd: Callable[..., CofferdProcess]
) -> None:
    publisher = device(cofferd, fleet.proxy)
    login(publisher, fleet.replicas[0].publisher)
    names = [f"m{i}.bin" for i in range(6)]
    for name in names:
        upload(publisher, name, DATA[: MiB + len(name)] + name.encode())

    # A fresh device (cold cache) loads them all while the second replica dies.
    reader = device(cofferd, fleet.proxy)
    login(reader, fleet.replicas[0].reader)
    loaded: dict[str, bytes] = {}
    failures: list[BaseException] = []

    def run() -> None:
        try:
            for name in names:
                loaded[name] = load(reader, name)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 30
    while len(loaded) < 2 and worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    victim = fleet.replicas[1]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    worker.join(120)
    assert not worker.is_alive()
    assert not failures, failures
    for name in names:
        assert loaded[name] == DATA[: MiB + len(name)] + name.encode()

    # Another device from then on: all of it answered by the survivor (what was
    # in flight on the victim at the kill is logged by then).
    time.sleep(0.5)
    before = len(fleet.proxy.access_log())
    late = device(cofferd, fleet.proxy)
    login(late, fleet.replicas[0].reader)
    for name in names:
        assert load(late, name) == DATA[: MiB + len(name)] + name.encode()
    survivor = f"127.0.0.1:{fleet.replicas[0].port}"
    after = fleet.proxy.served_by()[before:]
    # A login, and a resolve each (and its big part, with the local store).
    assert len(after) >= 1 + len(names) * (2 if fleet.store.name == "local" else 1)
    assert set(after) == {survivor}


def test_the_janitor_sweeps_each_expired_upload_once(
    nginx_factory: Callable[..., Nginx], upstream_factory: Callable[..., Upstream], store: Store
) -> None:
    # Uploads expire 2 to 3 s after they begin (lifetimes count from the start of
    # a second); each replica's janitor wakes every 0.75 s.
    with two_replicas(nginx_factory, upstream_factory, store, upload_ttl=3) as pair:
        first = pair.replicas[0]
        headers = {"Authorization": f"Bearer {first.login(first.publisher)}"}
        marks = pair.marks()
        blobs = []
        with requests.Session() as s:
            for i in range(24):
                base = f"{pair.proxy.url}/v1/resources/swept/m{i}/uploads"
                begun = s.post(base, json={}, headers=headers, timeout=30).json()
                s.put(begun["big_url"], data=b"x" * 1000, timeout=30).raise_for_status()
                blobs.append(urlsplit(begun["big_url"]).path.rsplit("/", 1)[1])

        def swept() -> list[int]:
            return [
                int(n)
                for log in pair.since(marks)
                for n in re.findall(r"removed (\d+) expired upload", log)
            ]

        deadline = time.monotonic() + 30
        while sum(swept()) < len(blobs) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # more rounds of both janitors: nothing is swept twice
        assert sum(swept()) == len(blobs), pair.since(marks)
        assert not store.blobs(first) & set(blobs)
        # Both janitors ran rounds; the lock let one sweep at a time.
        assert all("Traceback" not in log for log in pair.since(marks))


class _From(HTTPAdapter):
    """Connections from one loopback address: a client nginx sees as that address."""

    def __init__(self, source: str) -> None:
        self._source = source
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


def client_from(source: str) -> requests.Session:
    s = requests.Session()
    s.mount("http://", _From(source))
    return s


def test_behind_nginx_failed_logins_count_against_the_real_source(
    nginx_factory: Callable[..., Nginx],
    upstream_factory: Callable[..., Upstream],
    postgres: Postgres,
) -> None:
    # The replicas believe X-Forwarded-For from nginx (127.0.0.1) only; nginx
    # appends the address it saw, so what a client claims is not its source.
    url = postgres.create_database()
    store = Store("local", {"database_url": url}, lambda up: set(), url)
    with two_replicas(
        nginx_factory, upstream_factory, store, forwarded_allow_ips="127.0.0.1"
    ) as pair:
        owner = pair.replicas[0].reader
        login = f"{pair.proxy.url}/v1/login"
        marks = pair.marks()
        statuses = []
        with client_from("127.0.0.3") as attacker:
            for i in range(8):  # a new claimed address each time, over both replicas
                answer = attacker.post(
                    login,
                    json={"email": owner.email, "password": f"guess-{i}"},
                    headers={"X-Forwarded-For": f"10.0.0.{i}"},
                    timeout=30,
                )
                statuses.append(answer.status_code)
        assert statuses == [401] * 5 + [429] * 3
        assert len(set(pair.proxy.served_by())) == 2  # both replicas counted them
        with client_from("127.0.0.2") as device:
            answer = device.post(
                login, json={"email": owner.email, "password": owner.password}, timeout=30
            )
        assert answer.status_code == 200  # the owner, from elsewhere, is not held back
        logged = "".join(pair.since(marks))
        assert "127.0.0.3 - POST /v1/login 401" in logged
        assert "127.0.0.2 reader@example.com POST /v1/login 200" in logged
        assert "10.0.0." not in logged
