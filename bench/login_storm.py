"""Login storms against the upstream, and what its rightful users see meanwhile.

Three storms, each bounded by ``--count`` logins and ``--seconds``, sent by
``--clients`` threads from an attacker's loopback address straight at one
``coffer-upstream serve`` (the embedded default):

1. ``one_email``: wrong passwords for the owner's email. Meanwhile the owner
   logs in with the right password from 127.0.0.2 (another address) once a
   second: does the owner get in, and how long does it take?
2. ``distinct_emails``: logins with a new email each (no such user: what a
   password-spraying or enumeration run sends), from 127.0.0.4. Meanwhile a
   legitimate user logs in from 127.0.0.2 once a second: its latency; the
   upstream's RSS peak during the storm and what it keeps after.
3. ``distinct_spread``: the same, each login from an address of its own
   (127.1.0.1 on, a connection each): a botnet, which no per-address count
   slows down; what bounds it is the upstream's password-hash pool.

Loopback addresses other than 127.0.0.1 are used on purpose: the upstream's
server trusts ``X-Forwarded-For`` from 127.0.0.1 (its proxy), and the storm
must not be able to claim another address.

Usage: .venv/bin/python bench/login_storm.py [--count N] [--seconds S] [--clients C]
       [--upstream-python PATH]  (another checkout's interpreter, for "before" figures)
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fleet import rss_mib, session, upstream_fixture, upstream_rss

ATTACKER, OWNER = "127.0.0.3", "127.0.0.2"


def spread_address(i: int) -> str:
    """The ``i``-th of many attacker addresses (127.1.0.1 on): a botnet's storm."""
    return f"127.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}"


def storm(
    url: str,
    bodies: Any,
    count: int,
    seconds: float,
    clients: int,
    watch: Any,
    *,
    attacker: str | None = ATTACKER,
) -> dict[str, Any]:
    """Send ``count`` logins (``bodies(i)``) on ``clients`` threads, while ``watch()``
    runs once a second on another; stop at ``seconds``. ``attacker`` None: each
    login from an address of its own, on a connection of its own."""
    deadline = time.monotonic() + seconds
    statuses: dict[str, int] = {}
    lock = threading.Lock()
    sent = iter(range(count))

    def post(s: Any, i: int) -> str:
        try:
            return str(
                s.post(
                    f"{url}/v1/login",
                    json=bodies(i),
                    timeout=max(0.1, deadline - time.monotonic()),
                ).status_code
            )
        except Exception as exc:  # a refused or timed-out connection is a figure too
            return type(exc).__name__

    def attack() -> None:
        with session(attacker or ATTACKER) as s:
            while time.monotonic() < deadline:
                with lock:
                    i = next(sent, None)
                if i is None:
                    return
                if attacker is None:
                    with session(spread_address(i)) as own:
                        code = post(own, i)
                else:
                    code = post(s, i)
                with lock:
                    statuses[code] = statuses.get(code, 0) + 1

    watched: list[dict[str, Any]] = []
    stop = threading.Event()

    def watcher() -> None:
        while True:  # at once, then once a second
            watched.append(watch())
            if stop.wait(1.0):
                return

    start = time.monotonic()
    threads = [threading.Thread(target=attack) for _ in range(clients)]
    observer = threading.Thread(target=watcher)
    for t in [*threads, observer]:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    stop.set()
    observer.join()
    return {
        "sent": sum(statuses.values()),
        "seconds": round(elapsed, 1),
        "per_s": round(sum(statuses.values()) / elapsed, 1),
        "statuses": statuses,
        "watched": watched,
    }


def owner_login(url: str, email: str, password: str) -> dict[str, Any]:
    """One login from the owner's address: its status and latency."""
    start = time.monotonic()
    with session(OWNER) as s:
        try:
            status = str(
                s.post(
                    f"{url}/v1/login", json={"email": email, "password": password}, timeout=60
                ).status_code
            )
        except Exception as exc:
            status = type(exc).__name__
    return {"status": status, "seconds": round(time.monotonic() - start, 3)}


def latencies(watched: list[dict[str, Any]]) -> dict[str, Any]:
    ok = sorted(w["seconds"] for w in watched if w["status"] == "200")
    refused: dict[str, int] = {}
    for w in watched:
        if w["status"] != "200":
            refused[w["status"]] = refused.get(w["status"], 0) + 1
    return {
        "tries": len(watched),
        "got_in": len(ok),
        "not_in": refused,
        "p50_s": round(statistics.median(ok), 3) if ok else None,
        "max_s": round(ok[-1], 3) if ok else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="bound of each storm")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--upstream-python")
    args = parser.parse_args()
    if args.upstream_python:
        upstream_fixture.COMMAND = (args.upstream_python, "-m", "coffer_upstream")

    base = Path(tempfile.mkdtemp(prefix="coffer-bench-storm-"))
    results: dict[str, Any] = {"count": args.count, "clients": args.clients}
    try:
        with upstream_fixture.Upstream.with_new_users(base / "data") as server:
            owner = server.reader
            assert server.pid is not None

            def watch_owner() -> dict[str, Any]:
                return owner_login(server.url, owner.email, owner.password)

            one = storm(
                server.url,
                lambda i: {"email": owner.email, "password": f"wrong-{i}"},
                args.count,
                args.seconds,
                args.clients,
                watch_owner,
            )
            one["owner"] = latencies(one.pop("watched"))
            # After the storm: how long until the owner gets in.
            start = time.monotonic()
            after = owner_login(server.url, owner.email, owner.password)
            while after["status"] != "200" and time.monotonic() - start < 120:
                time.sleep(1)
                after = owner_login(server.url, owner.email, owner.password)
            one["owner_in_after_storm_s"] = (
                round(time.monotonic() - start, 1) if after["status"] == "200" else None
            )
            results["one_email"] = one

            # The second storm from another address than the first (which the
            # upstream may still slow down), then from a new address each time.
            for key, attacker in (("distinct_emails", "127.0.0.4"), ("distinct_spread", None)):
                before_rss = rss_mib(server.pid)
                peak = [0.0]

                def watch_user(peak: list[float] = peak) -> dict[str, Any]:
                    rss = upstream_rss([server.pid])
                    peak[0] = max(peak[0], *(p["rss_mib"] for p in rss))
                    return owner_login(
                        server.url, server.publisher.email, server.publisher.password
                    )

                distinct = storm(
                    server.url,
                    lambda i: {"email": f"nobody{i}@example.com", "password": "guess"},
                    args.count,
                    args.seconds,
                    args.clients,
                    watch_user,
                    attacker=attacker,
                )
                distinct["user"] = latencies(distinct.pop("watched"))
                time.sleep(2)
                rss = upstream_rss([server.pid])
                distinct["rss_mib_before"] = before_rss.get("rss_mib")
                distinct["rss_mib_peak_sampled"] = peak[0]  # once a second during the storm
                distinct["rss_mib_high_water"] = max(p["peak_rss_mib"] for p in rss)
                distinct["rss_mib_after"] = max(p["rss_mib"] for p in rss)
                results[key] = distinct
    finally:
        shutil.rmtree(base, ignore_errors=True)

    for name in ("one_email", "distinct_emails", "distinct_spread"):
        print(f"== {name}")
        for key, value in results[name].items():
            print(f"   {key:>24}: {value}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
