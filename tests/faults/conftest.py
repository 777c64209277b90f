"""The fault suite's stack: cofferd → fault proxies → the reference upstream and its CDN.

``stack(**env)`` starts the reference upstream with its CDN URLs pointing at
one proxy (``--public-url``) and cofferd with its ``upstream_url`` at another,
so a test can break the resource API and the CDN apart. ``env`` adds
``COFFER_*`` settings; the upstream timeout is short (``UPSTREAM_TIMEOUT``) so
stalls end quickly. cofferd runs as shipped (trust required, the upstream's
root pinned); ``Stack.upload`` signs what it uploads, and a load's trust
metadata comes through the API proxy too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from faults.proxy import FaultProxy
from fixtures.daemon import CofferdProcess, load_via_pipe, upload_via_pipe
from fixtures.upstream import Upstream

#: cofferd's upstream_timeout in the suite: every stall test waits about this long.
UPSTREAM_TIMEOUT = 2.0


@dataclass
class Stack:
    upstream: Upstream
    api: FaultProxy
    cdn: FaultProxy
    daemon: CofferdProcess

    def login(self, publisher: bool = True) -> None:
        account = self.upstream.publisher if publisher else self.upstream.reader
        answer = self.daemon.call("login", {"email": account.email, "password": account.password})
        assert answer.get("result") == {"status": "ok"}, answer

    def upload(self, name: str, data: bytes) -> dict[str, Any]:
        """Upload ``data`` and sign its release, as ``coffer upload --sign-key`` does.

        The signing refreshed the trust metadata, and publishing made the next
        load refresh it again: :meth:`refresh` then, so the next load's first
        API exchange is the resource's, as on a device between two refreshes.
        """
        with self.daemon.connect() as sock:
            answer = upload_via_pipe(sock, {"filename": name, "size": len(data)}, data)
        if "result" in answer:
            self.daemon.sign(answer["result"])
            self.refresh()
        return answer

    def refresh(self) -> None:
        """Refresh the daemon's trust metadata now (the call a publisher signs after)."""
        answer = self.daemon.call("trust.metadata", {"role": "publishers"})
        assert "result" in answer, answer

    def load(self, name: str) -> tuple[bytes, dict[str, Any]]:
        with self.daemon.connect() as sock:
            return load_via_pipe(sock, {"filename": name})

    def temp_files(self) -> list[Path]:
        cache = self.daemon.base / "cache"
        return [p for p in cache.rglob("*") if p.is_file() and p.name.startswith(".tmp")]


@pytest.fixture
def stack(
    upstream_factory: Callable[..., Upstream], cofferd: Callable[..., CofferdProcess]
) -> Iterator[Callable[..., Stack]]:
    proxies: list[FaultProxy] = []

    def make(**env: str) -> Stack:
        api, cdn = FaultProxy(), FaultProxy()
        proxies.extend((api, cdn))
        upstream = upstream_factory(public_url=cdn.url)
        api.target = cdn.target = ("127.0.0.1", upstream.port)
        settings = {"COFFER_UPSTREAM_TIMEOUT": str(UPSTREAM_TIMEOUT), **env}
        daemon = cofferd(upstream_url=api.url, env=settings)
        return Stack(upstream, api, cdn, daemon)

    yield make
    for proxy in proxies:
        proxy.close()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.monotonic()
    result = fn()
    return time.monotonic() - start, result


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def figure(name: str, value: float, unit: str = "s") -> None:
    """Print a measured figure (docs/reliability.md quotes them; run with ``-s``)."""
    print(f"\nFIGURE {name}: {value:.3f} {unit}")
