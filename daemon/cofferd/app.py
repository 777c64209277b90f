"""Wiring: settings in, the daemon's services and method table out.

:class:`App` holds what every method reaches through ``call.services`` (it
satisfies :class:`cofferd.rpc.services.Services`): the settings, the one API
client, the big-part cache, the notifier and the unlock workflow. Nothing here
reads the environment; ``main()`` builds the settings and the notifier and
passes them. The method table is built inside ``rpc/``
(:data:`cofferd.rpc.table.TABLE`); this module only hands it to the dispatcher.
"""

from __future__ import annotations

import threading

from cofferd.notify import Notifier
from cofferd.resources.cache import BigPartCache
from cofferd.resources.index import INDEX_NAME, Index
from cofferd.resources.managed import ManagedCache
from cofferd.resources.upstream import ApiClient
from cofferd.rpc.dispatch import Dispatcher
from cofferd.rpc.table import TABLE
from cofferd.settings import Settings
from cofferd.unlock import UnlockWorkflow


class App:
    """The daemon's services, shared by every call."""

    def __init__(self, settings: Settings, notifier: Notifier) -> None:
        self.settings = settings
        self.notifier = notifier
        self.cache = BigPartCache(settings.cache_dir)
        self.index = Index(settings.state_dir / INDEX_NAME)
        self.managed = ManagedCache(
            self.cache,
            self.index,
            max_bytes=settings.cache_max_bytes,
            min_free_bytes=settings.cache_min_free_bytes,
        )
        # The check and the build under one lock: two first calls at once must
        # not build two clients, one of them missing the other's login.
        self._client_lock = threading.Lock()
        self._client: ApiClient | None = None
        self.unlock = UnlockWorkflow.from_settings(settings, self.api_client, notifier)

    def api_client(self) -> ApiClient:
        """The process's one API client for ``settings.upstream_url``, built on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = ApiClient(
                    self.settings.upstream_url, timeout=self.settings.upstream_timeout
                )
            return self._client

    def close(self) -> None:
        """Close the API client (daemon shutdown); a later use builds a new one."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
            self._client = None


def build_dispatcher() -> Dispatcher:
    """The dispatcher over the method table."""
    return Dispatcher(TABLE)
