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
import time
from pathlib import Path

from cofferd.notify import Notifier
from cofferd.observe.audit import AuditLog
from cofferd.observe.metrics import Registry, coffer_registry
from cofferd.resources.cache import BigPartCache
from cofferd.resources.upstream import ApiClient
from cofferd.rpc.calllog import CallLog
from cofferd.rpc.dispatch import Dispatcher
from cofferd.rpc.observer import CallObserver
from cofferd.rpc.table import TABLE
from cofferd.settings import Settings
from cofferd.unlock import UnlockWorkflow


class App:
    """The daemon's services, shared by every call."""

    def __init__(self, settings: Settings, notifier: Notifier) -> None:
        self.settings = settings
        self.notifier = notifier
        self.cache = BigPartCache(settings.cache_dir)
        self.metrics: Registry = coffer_registry()
        self.metrics.on_collect(self._collect)
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
                    self.settings.upstream_url,
                    timeout=self.settings.upstream_timeout,
                    on_contact=self._upstream_contact,
                )
            return self._client

    def _upstream_contact(self, answered: bool) -> None:
        self.metrics.set("coffer_upstream_reachable", 1 if answered else 0)
        if answered:
            self.metrics.set("coffer_upstream_last_contact_timestamp_seconds", time.time())

    def _collect(self, registry: Registry) -> None:
        registry.set("coffer_cache_bytes", _bytes_under(self.cache.root))

    def close(self) -> None:
        """Close the API client (daemon shutdown); a later use builds a new one."""
        with self._client_lock:
            if self._client is not None:
                self._client.close()
            self._client = None


def _bytes_under(root: Path) -> int:
    """Bytes of the files under ``root`` (a file removed meanwhile counts nothing)."""
    total = 0
    for path in root.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total


def build_dispatcher(
    *,
    call_log: CallLog | None = None,
    journal: AuditLog | None = None,
    registry: Registry | None = None,
) -> Dispatcher:
    """The dispatcher over the method table, its calls logged, counted and audited."""
    observer = CallObserver(TABLE, call_log=call_log, journal=journal, registry=registry)
    return Dispatcher(TABLE, observer)
