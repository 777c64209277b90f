"""One API client per process, built on first use.

The spec's ``get_api_client`` read and set a global without a lock, so two
first calls at once could build two clients and one of them would hold the
credentials the other lacked. Here the check and the build happen under one
lock. Services never call this: they take the client as a parameter; only
the daemon's wiring does.
"""

from __future__ import annotations

import threading

from cofferd.resources.upstream import ApiClient
from cofferd.settings import Settings

_lock = threading.Lock()
_client: ApiClient | None = None


def get_api_client(settings: Settings) -> ApiClient:
    """The process's client for ``settings.upstream_url``, built on the first call.

    Later calls return the same instance whatever settings they pass: the
    settings are built once per process.
    """
    global _client
    with _lock:
        if _client is None:
            _client = ApiClient(settings.upstream_url, timeout=settings.upstream_timeout)
        return _client


def reset_api_client() -> None:
    """Close and forget the process's client (daemon shutdown, tests)."""
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None
