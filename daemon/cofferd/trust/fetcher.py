"""python-tuf's fetcher over the daemon's upstream session.

``tuf.ngclient`` asks for metadata by URL; :class:`UpstreamFetcher` fetches
it through :meth:`cofferd.resources.upstream.ApiClient.exchange`, so a
metadata request has the same deadline, connection pool and reachability
bookkeeping as every other upstream call. No authentication: the metadata
is public, and its signatures are what a device trusts.

A transport failure is raised as cofferd's
:class:`~cofferd.errors.UpstreamUnavailable` (python-tuf wraps it in its
``DownloadError``; :mod:`cofferd.trust.rules` unwraps it), so an unreachable
upstream leads to the offline path, not to a trust refusal. A status other
than 200 is python-tuf's ``DownloadHTTPError`` (a 404 ends root rotation).
The length caps are python-tuf's (``UpdaterConfig``): its
``download_bytes`` stops reading past them (rule ``endless-data``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface

from cofferd.resources.upstream import ApiClient

#: Bytes asked of the connection per read.
CHUNK = 64 * 1024


class UpstreamFetcher(FetcherInterface):
    """Fetch ``<upstream_url>/...`` URLs through the process's API client."""

    def __init__(self, base_url: str, client: Callable[[], ApiClient]) -> None:
        self._base = base_url.rstrip("/")
        self._client = client

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(self._base + "/"):
            # ngclient builds every URL from metadata_base_url: a bug if not.
            raise ValueError("a metadata URL outside the upstream")
        path = url[len(self._base) :]
        with self._client().exchange("GET", path, auth=False) as resp:
            if resp.status_code != 200:
                raise DownloadHTTPError(f"HTTP {resp.status_code}", resp.status_code)
            yield from resp.iter_content(CHUNK)
