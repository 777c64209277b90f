"""The one owner of ``load``, ``load_memfd`` and ``pull``: decide, read, deliver.

Every load runs the same three steps, in layer order:

1. decide: the release a publisher signed (:meth:`cofferd.trust.service.Trust.resource_release`:
   online, after a refresh of the trust metadata; unreachable, the last one
   this device verified; ``trust = "off"``: none), then
   :meth:`cofferd.field.offline.Field.resolve`: the upstream's answer for
   that version, or an offline record, checked field by field against the
   release before anything is read;
2. read (:func:`cofferd.resources.service.deliver` over the managed cache:
   the cached file, the one download under way, or the CDN, checked chunk by
   chunk against the signed manifest; offline, the cache only);
3. deliver into the caller's :class:`~cofferd.resources.sinks.Sink`, which
   chooses its own route (an fd, the inline buffer, a memfd, nowhere).

Names are checked once, at the RPC boundary, before they get here.
"""

from __future__ import annotations

from cofferd.errors import OfflineRefused, UpstreamUnavailable
from cofferd.field.offline import Field
from cofferd.models import LoadResult
from cofferd.resources.managed import ManagedCache
from cofferd.resources.service import deliver
from cofferd.resources.sinks import Nowhere, Sink
from cofferd.resources.wire import ResourceInfo
from cofferd.trust.checks import segments_of
from cofferd.trust.release import ResourceRelease
from cofferd.trust.service import Trust


class Loads:
    """Loads and pulls over the trust decision, one field service and one managed cache."""

    def __init__(self, field: Field, cache: ManagedCache, trust: Trust) -> None:
        self._field = field
        self._cache = cache
        self._trust = trust

    def load(self, folder: str, name: str, sink: Sink) -> LoadResult:
        """The plaintext of ``folder/name``'s signed (current) version into ``sink``."""
        release, info, offline = self._decide(folder, name)
        return deliver(
            self._cache,
            info,
            sink,
            cached_only=offline,
            segments=None if release is None else segments_of(release),
        )

    def stat(self, folder: str, name: str) -> tuple[int, int]:
        """The version and plaintext size a load of ``folder/name`` would deliver now.

        The decision alone: what a caller sizes its memfd by (``load_memfd``).
        """
        _, info, _ = self._decide(folder, name)
        return info.version, info.plaintext_size

    def pull(self, folder: str, name: str) -> LoadResult:
        """``folder/name``'s signed version into the cache, every byte checked.

        Through the decision a pull also keeps the resource's offline record,
        so a device can be readied before its uplink goes; offline, it checks
        the cached copy again. No room in the cache is TooLarge.
        """
        release, info, offline = self._decide(folder, name)
        return deliver(
            self._cache,
            info,
            Nowhere(),
            cached_only=offline,
            keep=True,
            segments=None if release is None else segments_of(release),
        )

    def _decide(self, folder: str, name: str) -> tuple[ResourceRelease | None, ResourceInfo, bool]:
        try:
            release = self._trust.resource_release(folder, name)
        except UpstreamUnavailable as exc:
            if not self._field.enabled:
                raise
            # Unreachable, and no release of it verified here to decide on: the
            # offline rules' answer, as for a resource never loaded with trust off.
            raise OfflineRefused(
                f"{exc}; offline use of {folder}/{name} refused: no record of a release"
                " verified here"
            ) from exc
        info, offline = self._field.resolve(folder, name, release)
        if release is not None:
            self._trust.verified(release)
        return release, info, offline
