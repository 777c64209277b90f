"""``coffer ls``, ``coffer pull`` and ``coffer cache ls|rm|prune|pin|unpin``: the model cache.

Registered by :func:`coffer.cli.build_parser` through :func:`add_commands`;
this module does not import :mod:`coffer.cli` (no cycle): the parser builder
hands in its ``command`` helper.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import threading
from collections.abc import Callable
from typing import Any

from coffer.client import DEFAULT_FOLDER, Client
from coffer.progress import ProgressLine, mib

Handler = Callable[[argparse.Namespace], int]
Command = Callable[[str, Handler, str], argparse.ArgumentParser]

#: Seconds ``coffer pull`` waits for its answer: a pull of many GiB is silent
#: on the socket for as long as it takes (its progress is polled beside it).
PULL_TIMEOUT = 6 * 3600.0
#: Seconds between two looks at the download's progress.
PROGRESS_EVERY = 0.25


def add_commands(command: Command) -> None:
    """Add ``ls``, ``pull`` and ``cache`` with the parser builder's ``command`` helper."""
    p = command("ls", cmd_ls, "list the resources of a folder upstream, and which are cached")
    p.add_argument("folder", metavar="FOLDER", nargs="?", default=DEFAULT_FOLDER)

    p = command("pull", cmd_pull, "fetch a resource into the cache ahead of time, verified")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--folder", default=DEFAULT_FOLDER, help="default: %(default)s")
    p.add_argument("--pin", action="store_true", help="never evict it (until unpinned)")

    p = command("cache", cmd_cache_ls, "the model cache: ls, rm, prune, pin, unpin")
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    q = sub.add_parser("ls", help="the cached entries (the default action)")
    q.set_defaults(handler=cmd_cache_ls)
    for name, handler, help in (
        ("rm", cmd_cache_rm, "drop a resource's cached versions"),
        ("pin", cmd_cache_pin, "never evict a cached resource"),
        ("unpin", cmd_cache_pin, "let a pinned resource be evicted again"),
    ):
        q = sub.add_parser(name, help=help, description=help)
        q.add_argument("name", metavar="NAME")
        q.add_argument("--folder", default=DEFAULT_FOLDER, help="default: %(default)s")
        q.set_defaults(handler=handler)
    q = sub.add_parser("prune", help="evict least recently used entries down to a size")
    q.add_argument("--max-bytes", type=_size, required=True, metavar="N")
    q.set_defaults(handler=cmd_cache_prune)


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a number of bytes: {text!r}")
    return value


def _client(args: argparse.Namespace, timeout: float | None = None) -> Client:
    return Client(args.socket, timeout=max(args.timeout, timeout or 0.0))


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    print(json.dumps(result, sort_keys=True) if args.json else text)


def _when(ts: object) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )


def cmd_ls(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.call("list", {"folder": args.folder})
    rows = [
        [
            i["filename"],
            str(i["version"]),
            mib(i["plaintext_size"]),
            _when(i["updated_at"]),
            "yes" if i["cached"] else "no",
        ]
        for i in r["items"]
    ]
    text = _table(["NAME", "VERSION", "SIZE", "UPDATED", "CACHED"], rows)
    _emit(args, r, text if rows else f"(no resources in {r['folder']})")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    params = {"filename": args.name, "folder": args.folder, "pin": args.pin}
    stop = threading.Event()
    watcher = None
    if sys.stderr.isatty() and not args.json:
        watcher = threading.Thread(target=_watch, args=(args, stop), daemon=True)
        watcher.start()
    try:
        with _client(args, PULL_TIMEOUT) as c:
            r = c.call("pull", params)
    finally:
        stop.set()
        if watcher is not None:
            watcher.join(5)
    how = "already cached, verified" if r["from_cache"] else "downloaded, verified"
    pinned = ", pinned" if r["pinned"] else ""
    text = f"{r['folder']}/{r['filename']} version {r['version']}: {mib(r['size'])} {how}{pinned}"
    _emit(args, r, text)
    return 0


def _watch(args: argparse.Namespace, stop: threading.Event) -> None:
    """Draw the download's progress from ``status`` until ``stop``."""
    line = ProgressLine(f"pull {args.name}")
    # Progress is a nicety: an error here ends the line, never the pull.
    with contextlib.suppress(Exception), _client(args) as c:
        while not stop.wait(PROGRESS_EVERY):
            for d in c.status().get("cache", {}).get("downloads", []):
                if (d.get("folder"), d.get("filename")) == (args.folder, args.name):
                    line(int(d["written"]), int(d["size"]))
    line.close()


def cmd_cache_ls(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.call("cache_list", {})
    rows = [
        [
            f"{e['folder']}/{e['filename']}",
            str(e["version"]),
            mib(e["size"]),
            _when(e["last_used"]),
            "yes" if e["pinned"] else "",
            _when(e["lease_expires"]) if e["lease_expires"] is not None else "",
        ]
        for e in r["entries"]
    ]
    cap = mib(r["max_bytes"]) if r["max_bytes"] else "no cap"
    total = f"{len(rows)} entries, {mib(r['bytes'])} held ({cap}, {mib(r['free_floor'])} kept free)"
    header = ["RESOURCE", "VERSION", "SIZE", "LAST USED", "PINNED", "LEASE UNTIL"]
    _emit(args, r, (_table(header, rows) + "\n" if rows else "") + total)
    return 0


def cmd_cache_rm(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.call("evict", {"filename": args.name, "folder": args.folder})
    versions = ", ".join(str(e["version"]) for e in r["evicted"])
    _emit(args, r, f"evicted {args.folder}/{args.name} (version {versions}), {mib(r['bytes'])}")
    return 0


def cmd_cache_prune(args: argparse.Namespace) -> int:
    with _client(args) as c:
        r = c.call("prune", {"max_bytes": args.max_bytes})
    _emit(
        args,
        r,
        f"evicted {len(r['evicted'])} entries ({mib(r['bytes'])}); {mib(r['held'])} held",
    )
    return 0


def cmd_cache_pin(args: argparse.Namespace) -> int:
    pinned = args.cache_command == "pin"
    with _client(args) as c:
        r = c.call("pin", {"filename": args.name, "folder": args.folder, "pinned": pinned})
    _emit(args, r, f"{r['folder']}/{r['filename']} {'pinned' if pinned else 'unpinned'}")
    return 0
