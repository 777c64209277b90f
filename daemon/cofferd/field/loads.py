"""The one owner of ``load``, ``load_memfd`` and ``pull``: decide, read, deliver.

Every load runs the same three steps, in layer order:

1. decide (:meth:`cofferd.field.offline.Field.resolve`): which version, and
   whether online or from an offline record;
2. read (:func:`cofferd.resources.service.deliver` over the managed cache:
   the cached file, the one download under way, or the CDN; offline, the
   cache only);
3. deliver into the caller's :class:`~cofferd.resources.sinks.Sink`, which
   chooses its own route (an fd, the inline buffer, a memfd, nowhere).

Names are checked once, at the RPC boundary, before they get here.
"""

from __future__ import annotations

from cofferd.field.offline import Field
from cofferd.models import LoadResult
from cofferd.resources.managed import ManagedCache
from cofferd.resources.service import deliver
from cofferd.resources.sinks import Nowhere, Sink


class Loads:
    """Loads and pulls over one field service and one managed cache."""

    def __init__(self, field: Field, cache: ManagedCache) -> None:
        self._field = field
        self._cache = cache

    def load(self, folder: str, name: str, sink: Sink) -> LoadResult:
        """The plaintext of ``folder/name``'s current version into ``sink``."""
        info, offline = self._field.resolve(folder, name)
        return deliver(self._cache, info, sink, cached_only=offline)

    def stat(self, folder: str, name: str) -> tuple[int, int]:
        """The version and plaintext size a load of ``folder/name`` would deliver now.

        The decision alone: what a caller sizes its memfd by (``load_memfd``).
        """
        info, _ = self._field.resolve(folder, name)
        return info.version, info.plaintext_size

    def pull(self, folder: str, name: str) -> LoadResult:
        """``folder/name``'s current version into the cache, every byte authenticated.

        Through the decision a pull also keeps the resource's offline record,
        so a device can be readied before its uplink goes; offline, it checks
        the cached copy again. No room in the cache is TooLarge.
        """
        info, offline = self._field.resolve(folder, name)
        return deliver(self._cache, info, Nowhere(), cached_only=offline, keep=True)
