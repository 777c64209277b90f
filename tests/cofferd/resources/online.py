"""Loads and pulls as the load owner runs them online: the upstream's answer is the decision.

``cofferd.field.loads.Loads`` decides through the field layer; these tests of
the resources layer decide by asking the API client directly, then read and
deliver with :func:`cofferd.resources.service.deliver`. The managed cache's
CDN source is a :class:`Cdn` whose client is the one of the current load.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from cofferd.models import LoadResult
from cofferd.resources.cache import BigPartCache
from cofferd.resources.index import Index
from cofferd.resources.managed import ManagedCache
from cofferd.resources.service import deliver
from cofferd.resources.sinks import BufferSink, Nowhere, StreamSink
from cofferd.resources.upstream import ApiClient


class Cdn:
    """The managed cache's CDN source: the API client of the test's current load."""

    client: ApiClient | None = None

    def iter_big(self, url: str, size: int, offset: int = 0) -> Iterator[bytes]:
        assert self.client is not None, "no load has named its client yet"
        return self.client.iter_big(url, size, offset)


def managed_cache(cache_dir: Path, index_path: Path, **kw: Any) -> ManagedCache:
    cdn = Cdn()
    cache = ManagedCache(BigPartCache(cache_dir), Index(index_path), cdn, **kw)
    cache.cdn = cdn  # type: ignore[attr-defined]
    return cache


def load(
    client: ApiClient,
    cache: ManagedCache,
    folder: str,
    name: str,
    out: BinaryIO,
    *,
    max_size: int | None = None,
) -> LoadResult:
    """An online load into ``out``; with ``max_size``, through the capped inline buffer."""
    cache.cdn.client = client  # type: ignore[attr-defined]
    info = client.get_resource(folder, name)
    if max_size is None:
        return deliver(cache, info, StreamSink(out))
    sink = BufferSink(max_size)
    result = deliver(cache, info, sink)
    out.write(sink.getvalue())
    return result


def pull(client: ApiClient, cache: ManagedCache, folder: str, name: str) -> LoadResult:
    """An online pull: into the cache, every byte authenticated, the plaintext nowhere."""
    cache.cdn.client = client  # type: ignore[attr-defined]
    info = client.get_resource(folder, name)
    return deliver(cache, info, Nowhere(), keep=True)
