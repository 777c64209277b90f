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
        # The check and the build under one lock: two first calls at once must
        # not build two clients, one of them missing the other's login.
        self._client_lock = threading.Lock()
        self._client: ApiClient | None = None
        # The unlock logs in with the credentials it was given on a session of
        # its own, dropped when its worker ends: the daemon's login is changed
        # only by `login`.
        self.unlock = UnlockWorkflow.from_settings(settings, self.new_api_client, notifier)

    def new_api_client(self) -> ApiClient:
        """A fresh API client with no login, for one unlock's own upstream session."""
        return ApiClient(self.settings.upstream_url, timeout=self.settings.upstream_timeout)

    def api_client(self) -> ApiClient:
        """The process's one API client for ``settings.upstream_url``, built on first use."""
        with self._client_lock:
            if self._client is None:
                self._client = self.new_api_client()
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
