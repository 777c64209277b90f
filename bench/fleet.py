"""Benchmark of the upstream under a fleet: N devices renewing, resolving, downloading.

Each simulated device (a thread with its own ``requests`` session, so its own
keep-alive connections) does what cofferd does for a cold load, all devices
at once:

1. ``login``: ``POST /v1/login`` with its password (a password hash upstream);
2. ``resolve``: ``GET /v1/resources/bench/model``;
3. ``download``: the big part (``--big-mib``, 16 by default) from ``big_url``,
   streamed in 1 MiB reads and counted;
4. ``renew``: a new token the way the upstream offers: its refresh token
   (``POST /v1/token``, extension) when the login answer had one, else
   a second password login (today's upstream);
5. ``resolve`` again with the renewed token (the renewal works);
6. as a device with its own identity (issue 19): ``enroll`` once
   (``POST /v1/devices``, one enrollment token shared by the fleet, a fresh
   Ed25519 key per device), then ``device_login`` twice (the first token and
   its renewal: an assertion signed with the key, ``POST /v1/token`` with the
   JWT bearer grant; no password hash), each followed by a ``resolve``.

against two deployments, each with its ceilings measured in the same run:

(a) ``embedded``: one ``coffer-upstream serve`` on its defaults (SQLite, the
    local store served by the app's own CDN routes);
(b) ``replicas``: two ``serve`` processes over one PostgreSQL and one S3
    server (radosgw) behind nginx (tests/fixtures: postgres, s3, nginx). Needs
    an upstream with ``--database-url`` and ``--store s3``: otherwise reported
    as skipped, with why.

Ceilings, same client, same concurrency, same request count:

- ``resolve_vs_bare``: resolve requests/s over those of a bare route (a tiny
  Starlette app under uvicorn with the upstream's settings, in the same
  topology: one process, or two behind nginx). Target >= 0.5.
- ``download_vs_store`` (b only): big-part MiB/s through ``big_url`` over a
  GET presigned by the bench itself on the S3 server. Target >= 0.9.

Reported: p50/p99 per operation, requests/s, logins/s (password) and
renewals/s (refresh token) over the span each ran in; the login ceilings,
measured in the same run with the same clients and counts:
``password_logins_per_s`` and ``device_logins_per_s`` (proof of key), each a
burst of ``min(devices, 32)`` clients logging in ``LOGIN_BURST`` times as fast
as answered, and ``device_vs_password_logins``, their ratio (target >= 10: a
signature check against a memory-hard hash); ``login_busy_503`` (password
logins the upstream refused with 503 and ``Retry-After`` because its hash pool
was full, waited out and retried as a device's boot-login retry does; the
login's latency includes the wait); errors (must be 0: any other status but
the expected, a short body or an exception); RSS (now and peak) of every
upstream process (uvicorn workers each). Bounded: ``--deadline`` seconds (120)
for each deployment's runs, its ceilings included (set-up aside), and at most
``devices * 10`` fleet requests plus ``min(devices, 32) * 49 + min(devices, 16) * 2``
for the ceilings.

Usage: .venv/bin/python bench/fleet.py [--devices N] [--big-mib M] [--only a|b]
       [--upstream-python PATH]  (another checkout's interpreter, for "before" figures)
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
upstream_fixture = importlib.import_module("fixtures.upstream")
nginx_fixture = importlib.import_module("fixtures.nginx")
devices_fixture = importlib.import_module("fixtures.devices")

MiB = 1 << 20
FOLDER, NAME = "bench", "model"
#: Device accounts the devices share (a fleet has one per site or per device;
#: a few keep the set-up short: each costs a CLI process and a password hash).
ACCOUNTS = 8
#: Logins per client in each login burst (password, then proof of key).
LOGIN_BURST = 4


# The client side


class SourceAdapter(HTTPAdapter):
    """Connections from one loopback address (127.0.0.0/8 is all ours): the
    upstream sees distinct clients, as it would distinct devices or attackers."""

    def __init__(self, source: str, pool: int = 4) -> None:
        self._source = source
        super().__init__(pool_connections=pool, pool_maxsize=pool)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kwargs)


def session(source: str | None = None) -> requests.Session:
    s = requests.Session()
    if source is not None:
        s.mount("http://", SourceAdapter(source))
    return s


@dataclass
class Stats:
    """Latencies per operation, failures, and when each operation ran."""

    deadline: float
    latencies: dict[str, list[float]] = field(default_factory=dict)
    spans: dict[str, list[float]] = field(default_factory=dict)  # [first start, last end]
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    busy: int = 0  # logins answered 503 + Retry-After, then tried again
    lock: threading.Lock = field(default_factory=threading.Lock)

    def left(self) -> float:
        return max(0.1, self.deadline - time.monotonic())

    @contextmanager
    def timed(self, op: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        except Exception as exc:
            with self.lock:
                self.requests += 1
                self.errors.append(f"{op}: {type(exc).__name__}: {str(exc)[:200]}")
            raise
        end = time.monotonic()
        with self.lock:
            self.requests += 1
            self.latencies.setdefault(op, []).append(end - start)
            span = self.spans.setdefault(op, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for op, values in sorted(self.latencies.items()):
            values.sort()
            span = self.spans[op][1] - self.spans[op][0]
            out[op] = {
                "count": len(values),
                "p50_ms": round(1000 * statistics.median(values), 1),
                "p99_ms": round(1000 * values[min(len(values) - 1, int(len(values) * 0.99))], 1),
                "per_s": round(len(values) / span, 1) if span > 0 else None,
            }
        return out


def expect(response: requests.Response, status: int = 200) -> requests.Response:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} answered {response.status_code}")
    return response


def download(s: requests.Session, url: str, size: int, timeout: float) -> None:
    got = 0
    with s.get(url, stream=True, timeout=timeout) as response:
        expect(response)
        for chunk in response.iter_content(MiB):
            got += len(chunk)
    if got != size:
        raise RuntimeError(f"short download: {got} of {size}")


def password_login(s: requests.Session, api: str, account: Any, stats: Stats) -> requests.Response:
    """``POST /v1/login``; a 503 with ``Retry-After`` (the upstream's hash pool is
    full) is waited out and tried again, as a device's boot-login retry does,
    and counted in ``stats.busy``: back-pressure, not an error."""
    while True:
        answer = s.post(
            f"{api}/v1/login",
            json={"email": account.email, "password": account.password},
            timeout=stats.left(),
        )
        after = answer.headers.get("Retry-After", "")
        if answer.status_code != 503 or not after.isdigit() or stats.left() <= int(after):
            return expect(answer)
        with stats.lock:
            stats.busy += 1
        time.sleep(int(after))


def device(api: str, account: Any, size: int, stats: Stats, enroll_token: str | None) -> None:
    """One device's cold load with a token renewal, then as a device with its own
    key (when there is an enrollment token); errors are recorded, not raised."""
    password_device(api, account, size, stats)
    if enroll_token is not None:
        key_device(api, enroll_token, stats)


def key_device(api: str, enroll_token: str, stats: Stats) -> None:
    """Enroll a new key once, then log in twice by proof of key, resolving after each."""
    upstream = SimpleNamespace(url=api)  # what the fixture's Device needs: the URL
    identity = devices_fixture.Device()
    with session() as s:
        try:
            with stats.timed("enroll"):
                expect(identity.enroll(upstream, enroll_token, session=s), 201)
            for _ in range(2):
                with stats.timed("device_login"):
                    token = expect(identity.login(upstream, session=s)).json()["access_token"]
                with stats.timed("resolve"):
                    expect(
                        s.get(
                            f"{api}/v1/resources/{FOLDER}/{NAME}",
                            headers={"Authorization": f"Bearer {token}"},
                            timeout=stats.left(),
                        )
                    )
        except Exception:  # noqa: S110 - recorded by Stats.timed
            pass


def password_device(api: str, account: Any, size: int, stats: Stats) -> None:
    """A device logging in with an account's password, renewing by refresh token."""
    with session() as s:
        try:
            with stats.timed("login"):
                answer = password_login(s, api, account, stats).json()
            headers = {"Authorization": f"Bearer {answer['access_token']}"}
            with stats.timed("resolve"):
                resource = expect(
                    s.get(
                        f"{api}/v1/resources/{FOLDER}/{NAME}", headers=headers, timeout=stats.left()
                    )
                ).json()
            with stats.timed("download"):
                download(s, resource["big_url"], size, stats.left())
            refresh = answer.get("refresh_token")
            with stats.timed("renew" if refresh else "login"):
                renewed = (
                    expect(
                        s.post(
                            f"{api}/v1/token",
                            json={"refresh_token": refresh},
                            timeout=stats.left(),
                        )
                    )
                    if refresh
                    else password_login(s, api, account, stats)
                ).json()
            headers = {"Authorization": f"Bearer {renewed['access_token']}"}
            with stats.timed("resolve"):
                expect(
                    s.get(
                        f"{api}/v1/resources/{FOLDER}/{NAME}", headers=headers, timeout=stats.left()
                    )
                )
        except Exception:  # noqa: S110 - recorded by Stats.timed
            pass


def run_threads(count: int, work: Callable[[int], None]) -> float:
    """``work(i)`` on ``count`` threads started together; the wall time."""
    barrier = threading.Barrier(count + 1)

    def run(i: int) -> None:
        barrier.wait()
        work(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.monotonic()
    for t in threads:
        t.join()
    return time.monotonic() - start


def burst(
    clients: int, per_client: int, url: str, headers: dict[str, str], stats: Stats, op: str
) -> float:
    """``clients`` sessions each GETting ``url`` ``per_client`` times: requests/s."""

    def work(_: int) -> None:
        with session() as s:
            for _ in range(per_client):
                try:
                    with stats.timed(op):
                        expect(s.get(url, headers=headers, timeout=stats.left()))
                except Exception:  # noqa: S110 - recorded
                    pass

    wall = run_threads(clients, work)
    return clients * per_client / wall


def login_bursts(dep: Deployment, clients: int, stats: Stats) -> tuple[float, float | None]:
    """Password logins/s and proof-of-key logins/s, each a burst of ``clients``
    sessions logging in as fast as answered (``LOGIN_BURST`` times each)."""

    def passwords(i: int) -> None:
        account = dep.device_accounts[i % len(dep.device_accounts)]
        with session() as s:
            for _ in range(LOGIN_BURST):
                try:
                    with stats.timed("password_login_burst"):
                        password_login(s, dep.api, account, stats)
                except Exception:  # noqa: S110 - recorded
                    pass

    password_rate = clients * LOGIN_BURST / run_threads(clients, passwords)
    if dep.enroll_token is None:
        return password_rate, None
    upstream = SimpleNamespace(url=dep.api)
    identities = [devices_fixture.Device() for _ in range(clients)]
    for identity in identities:
        expect(identity.enroll(upstream, dep.enroll_token), 201)

    def keys(i: int) -> None:
        with session() as s:
            for _ in range(LOGIN_BURST):
                try:
                    with stats.timed("device_login_burst"):
                        expect(identities[i].login(upstream, session=s))
                except Exception:  # noqa: S110 - recorded
                    pass

    return password_rate, clients * LOGIN_BURST / run_threads(clients, keys)


def download_burst(clients: int, url: str, size: int, stats: Stats, op: str) -> float:
    """``clients`` concurrent downloads of ``url``: MiB/s in all."""

    def work(_: int) -> None:
        with session() as s:
            try:
                with stats.timed(op):
                    download(s, url, size, stats.left())
            except Exception:  # noqa: S110 - recorded
                pass

    wall = run_threads(clients, work)
    return clients * size / MiB / wall


# The server side


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's workers are children of its supervisor)."""
    found = [pid]
    for p in found:
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except FileNotFoundError:
            continue
        found.extend(int(c) for c in children)
    return found


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS (now) and VmHWM (peak) of one process, in MiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    except FileNotFoundError:
        return {}
    return {"rss_mib": out.get("VmRSS", 0.0), "peak_rss_mib": out.get("VmHWM", 0.0)}


def upstream_rss(pids: list[int]) -> list[dict[str, float]]:
    return [figures for root in pids for p in process_tree(root) if (figures := rss_mib(p))]


def accounts(server: Any, count: int) -> list[Any]:
    return [
        server.add_user(f"device{i}@example.com", f"device-{i}-password", "reader")
        for i in range(count)
    ]


def fleet_enroll_token(server: Any, devices: int) -> str | None:
    """One enrollment token for the whole fleet; None if this upstream has none."""
    try:
        # Each fleet device's key, and the login burst's.
        uses = devices + min(devices, 32)
        return str(devices_fixture.enrollment_token(server, uses=uses, expires="1h").token)
    except RuntimeError:
        return None  # another checkout's upstream (--upstream-python), from before them


def publish(server: Any, size: int) -> None:
    block = os.urandom(MiB)
    big = block * (size // MiB) + block[: size % MiB]
    server.publish(FOLDER, NAME, big)


BARE_APP = """
import socket, sys
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from coffer_upstream import serve

BODY = {"small": "A" * 56, "key": "B" * 44, "big_url": "http://x/" + "c" * 120,
        "big_size": 16777216, "big_sha256": "d" * 64, "plaintext_size": 16777216, "version": 1}

async def resolve(request):
    return JSONResponse(BODY)

app = Starlette(routes=[Route("/v1/resources/{folder}/{name}", resolve)])
# The upstream's own uvicorn settings (coffer_upstream/serve.py), one worker.
sock = socket.socket(fileno=int(sys.argv[1]))
uvicorn.Server(uvicorn.Config(
    app, timeout_keep_alive=120, limit_concurrency=serve.LIMIT_CONCURRENCY,
    h11_max_incomplete_event_size=serve.MAX_HEADER_BYTES, access_log=False,
    log_config=None, server_header=False,
)).run(sockets=[sock])
"""


@contextmanager
def bare_servers(count: int) -> Iterator[list[int] | None]:
    """``count`` bare Starlette apps under uvicorn with the upstream's settings; their ports.

    None when measuring another checkout's upstream (``--upstream-python``): it
    may not be on Starlette and uvicorn. (``coffer_upstream`` is not imported
    here: with ``tests/`` on ``sys.path``, ``tests/coffer_upstream`` would
    shadow the editable install's package; the child process has no such path.)
    """
    if upstream_fixture.COMMAND[0] != sys.executable:
        yield None
        return
    processes = []
    try:
        ports = []
        for _ in range(count):
            with socket.create_server(("127.0.0.1", 0), backlog=2048) as listener:
                ports.append(listener.getsockname()[1])
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", BARE_APP, str(listener.fileno())],
                        pass_fds=[listener.fileno()],
                        stdin=subprocess.DEVNULL,
                    )
                )
        deadline = time.monotonic() + 30
        for port in ports:
            while True:
                try:
                    requests.get(
                        f"http://127.0.0.1:{port}/v1/resources/a/b", timeout=1
                    ).raise_for_status()
                    break
                except requests.RequestException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        yield ports
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@dataclass
class Deployment:
    """Where the devices go and what serves them."""

    name: str
    api: str
    reader: Any
    device_accounts: list[Any]
    pids: list[int]
    bare_url: str | None
    store_url: str | None = None  # a presigned GET of the big part, straight from the store
    #: Shared by the fleet's keys; None: an upstream without device identities.
    enroll_token: str | None = None


def measure(dep: Deployment, args: argparse.Namespace) -> dict[str, Any]:
    size = args.big_mib * MiB
    stats = Stats(deadline=time.monotonic() + args.deadline)
    wall = run_threads(
        args.devices,
        lambda i: device(
            dep.api,
            dep.device_accounts[i % len(dep.device_accounts)],
            size,
            stats,
            dep.enroll_token,
        ),
    )
    fleet = stats.summary()
    figures: dict[str, Any] = {
        "devices": args.devices,
        "big_mib": args.big_mib,
        "wall_s": round(wall, 2),
        "requests_per_s": round(stats.requests / wall, 1),
        "logins_per_s": fleet.get("login", {}).get("per_s"),
        "renewals_per_s": fleet.get("renew", {}).get("per_s"),
        "ops": fleet,
        "login_busy_503": stats.busy,
        "errors": len(stats.errors),
        "error_samples": stats.errors[:5],
    }
    # Ceilings: same client, same concurrency and count for both sides.
    clients = min(args.devices, 32)
    ceiling = Stats(deadline=stats.deadline)  # one bound for the whole deployment
    password_rate, device_rate = login_bursts(dep, clients, ceiling)
    figures["password_logins_per_s"] = round(password_rate, 1)
    figures["device_logins_per_s"] = None if device_rate is None else round(device_rate, 1)
    figures["device_vs_password_logins"] = (
        None if device_rate is None else round(device_rate / password_rate, 1)
    )
    token = requests.post(
        f"{dep.api}/v1/login",
        json={"email": dep.reader.email, "password": dep.reader.password},
        timeout=60,
    ).json()["access_token"]
    resolve_url = f"{dep.api}/v1/resources/{FOLDER}/{NAME}"
    resolve_rps = burst(
        clients, 20, resolve_url, {"Authorization": f"Bearer {token}"}, ceiling, "resolve"
    )
    figures["resolve_burst_per_s"] = round(resolve_rps, 1)
    if dep.bare_url is not None:
        bare_rps = burst(clients, 20, dep.bare_url, {}, ceiling, "bare")
        figures["bare_burst_per_s"] = round(bare_rps, 1)
        figures["resolve_vs_bare"] = round(resolve_rps / bare_rps, 2)
    else:
        figures["resolve_vs_bare"] = None  # no Starlette/uvicorn to compare with
    if dep.store_url is not None:
        big_url = requests.get(
            resolve_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        ).json()["big_url"]
        clients = min(args.devices, 16)
        via = download_burst(clients, big_url, size, ceiling, "download")
        direct = download_burst(clients, dep.store_url, size, ceiling, "store")
        figures["download_burst_mib_s"] = round(via, 1)
        figures["store_burst_mib_s"] = round(direct, 1)
        figures["download_vs_store"] = round(via / direct, 2)
    else:
        figures["download_vs_store"] = None  # the local store: the app is the store
    figures["ceiling_errors"] = len(ceiling.errors)
    figures["errors"] += len(ceiling.errors)
    figures["error_samples"] += ceiling.errors[:5]
    figures["upstream_processes"] = upstream_rss(dep.pids)
    figures["upstream_peak_rss_mib_per_worker"] = max(
        (p["peak_rss_mib"] for p in figures["upstream_processes"]), default=None
    )
    return figures


@contextmanager
def embedded(base: Path, args: argparse.Namespace) -> Iterator[Deployment]:
    """(a): one ``serve`` on its defaults."""
    with ExitStack() as stack:
        server = stack.enter_context(upstream_fixture.Upstream.with_new_users(base / "a"))
        device_accounts = accounts(server, ACCOUNTS)
        publish(server, args.big_mib * MiB)
        ports = stack.enter_context(bare_servers(1))
        bare = None if ports is None else f"http://127.0.0.1:{ports[0]}/v1/resources/a/b"
        yield Deployment(
            "embedded",
            server.url,
            server.reader,
            device_accounts,
            [server.pid],
            bare,
            enroll_token=fleet_enroll_token(server, args.devices),
        )


@contextmanager
def replicas(base: Path, args: argparse.Namespace) -> Iterator[Deployment]:
    """(b): two ``serve`` over PostgreSQL and S3 (radosgw) behind nginx."""
    try:
        s3_fixture = importlib.import_module("fixtures.s3")
        postgres_fixture = importlib.import_module("fixtures.postgres")
    except ImportError as exc:
        raise Skipped(f"no fixture for it in this checkout ({exc.name})") from exc
    usage = subprocess.run(
        [*upstream_fixture.COMMAND, "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    if "--database-url" not in usage or "--store" not in usage:
        raise Skipped("this upstream has no --database-url/--store")
    with ExitStack() as stack:
        pg_base = base / "postgres"
        pg_base.mkdir(mode=0o755)  # the postgres user (as root runs it) reaches inside
        pg_base.chmod(0o755)
        base.chmod(0o755)
        pg = postgres_fixture.Postgres(pg_base).start()
        stack.callback(pg.stop)
        url = pg.create_database()
        s3 = stack.enter_context(s3_fixture.S3Server.start())
        bucket = s3.new_bucket()
        options = s3.upstream_options(bucket)
        # The admin commands (user add) read the database URL from the environment.
        os.environ["COFFER_UPSTREAM_DATABASE_URL"] = url
        stack.callback(os.environ.pop, "COFFER_UPSTREAM_DATABASE_URL", None)
        data_dir = base / "b"
        subprocess.run(
            [*upstream_fixture.COMMAND, "db", "upgrade", "--data-dir", str(data_dir)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        proxy = stack.enter_context(nginx_fixture.Nginx(base / "nginx"))
        serve_options = {
            "public_url": proxy.url,
            "extra_args": [*options["extra_args"], "--forwarded-allow-ips", "127.0.0.1"],
            "env": options["env"],
        }
        first = stack.enter_context(
            upstream_fixture.Upstream.with_new_users(data_dir, **serve_options).start()
        )
        second = upstream_fixture.Upstream(data_dir, first.reader, first.publisher, **serve_options)
        second.log_path = first.log_path.with_name("second.log")
        stack.enter_context(second.start())
        proxy.start([first, second])
        device_accounts = accounts(first, ACCOUNTS)
        publish(first, args.big_mib * MiB)
        # The store's own GET of the same object, presigned here.
        token = first.login(first.reader)
        big_url = requests.get(
            f"{proxy.url}/v1/resources/{FOLDER}/{NAME}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ).json()["big_url"]
        key = urlsplit(big_url).path.removeprefix(f"/{bucket}/")
        store_url = s3.client().generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600
        )
        ports = stack.enter_context(bare_servers(2))
        bare = None
        if ports is not None:
            bare_proxy = stack.enter_context(nginx_fixture.Nginx(base / "nginx-bare"))
            bare_proxy.start([f"127.0.0.1:{p}" for p in ports])
            bare = f"{bare_proxy.url}/v1/resources/a/b"
        assert first.pid is not None
        assert second.pid is not None
        yield Deployment(
            "replicas",
            proxy.url,
            first.reader,
            device_accounts,
            [first.pid, second.pid],
            bare,
            store_url,
            fleet_enroll_token(first, args.devices),
        )


class Skipped(Exception):
    """A deployment this checkout cannot run."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--big-mib", type=int, default=16)
    parser.add_argument(
        "--deadline", type=float, default=120.0, help="seconds for each deployment, all in"
    )
    parser.add_argument("--only", choices=("a", "b"))
    parser.add_argument(
        "--upstream-python",
        help="the interpreter of another checkout's venv: measure its coffer_upstream",
    )
    args = parser.parse_args()
    if args.upstream_python:
        upstream_fixture.COMMAND = (args.upstream_python, "-m", "coffer_upstream")

    results: dict[str, Any] = {}
    base = Path(tempfile.mkdtemp(prefix="coffer-bench-fleet-"))
    try:
        for key, deploy in (("a", embedded), ("b", replicas)):
            if args.only and args.only != key:
                continue
            try:
                with deploy(base, args) as dep:
                    results[dep.name] = measure(dep, args)
            except Skipped as why:
                results["replicas" if key == "b" else "embedded"] = {"skipped": str(why)}
    finally:
        shutil.rmtree(base, ignore_errors=True)

    for name, figures in results.items():
        print(f"== {name}")
        if "skipped" in figures:
            print(f"   skipped: {figures['skipped']}")
            continue
        print(f"   {'op':<10}{'count':>7}{'p50 ms':>10}{'p99 ms':>10}{'per s':>9}")
        for op, f in figures["ops"].items():
            print(
                f"   {op:<10}{f['count']:>7}{f['p50_ms']:>10}{f['p99_ms']:>10}{f['per_s'] or '':>9}"
            )
        for key in (
            "wall_s",
            "requests_per_s",
            "logins_per_s",
            "renewals_per_s",
            "password_logins_per_s",
            "device_logins_per_s",
            "device_vs_password_logins",
            "resolve_burst_per_s",
            "bare_burst_per_s",
            "resolve_vs_bare",
            "download_burst_mib_s",
            "store_burst_mib_s",
            "download_vs_store",
            "login_busy_503",
            "errors",
            "upstream_peak_rss_mib_per_worker",
        ):
            if key in figures:
                print(f"   {key:>34}: {figures[key]}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
