"""What the methods may use of the daemon: a typed view, defined here, below the wiring.

:class:`cofferd.app.App` satisfies :class:`Services`; methods see only this
Protocol through ``call.services``, so ``rpc/`` never imports the app that
builds it (no cycle), and a test can hand in any object of this shape.
"""

from __future__ import annotations

from typing import Any, Protocol

from cofferd.field.enrollment import Enrollment
from cofferd.field.identity import IdentityState
from cofferd.field.loads import Loads
from cofferd.field.login import BootLogin
from cofferd.field.offline import Field
from cofferd.models import UnlockState
from cofferd.notify import Notifier
from cofferd.observe.metrics import Registry
from cofferd.resources.index import Index
from cofferd.resources.managed import ManagedCache
from cofferd.resources.upstream import ApiClient
from cofferd.settings import Settings
from cofferd.trust.service import Trust


class UnlockService(Protocol):
    """The unlock workflow, as the ``unlock``/``unlock_status``/``status`` methods use it."""

    @property
    def state(self) -> UnlockState: ...

    @property
    def engine_checked_at(self) -> float | None: ...

    def start(self, email: str, password: str) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


class Services(Protocol):
    """The daemon's shared services, as one call sees them."""

    @property
    def settings(self) -> Settings: ...

    @property
    def notifier(self) -> Notifier: ...

    @property
    def unlock(self) -> UnlockService: ...

    @property
    def index(self) -> Index:
        """The device index (cache entries, pins, offline records)."""
        ...

    @property
    def managed(self) -> ManagedCache:
        """The cache's policy: room, eviction, pins, single-flight downloads."""
        ...

    @property
    def metrics(self) -> Registry:
        """The daemon's metrics (:func:`cofferd.observe.metrics.coffer_registry`)."""
        ...

    def api_client(self) -> ApiClient:
        """The process's one upstream API client (built on first use)."""
        ...

    @property
    def loads(self) -> Loads:
        """The one owner of load, load_memfd and pull (``cofferd.field.loads``)."""
        ...

    @property
    def trust(self) -> Trust:
        """Which releases a publisher signed (``cofferd.trust``)."""
        ...

    @property
    def field(self) -> Field:
        """Offline decisions and records (``cofferd.field``)."""
        ...

    @property
    def boot_login(self) -> BootLogin:
        """Where the login came from (the boot credential, a ``login`` call)."""
        ...

    @property
    def identity(self) -> IdentityState:
        """The device's own key pair and whether it is new (``cofferd.field.identity``)."""
        ...

    @property
    def enrollment(self) -> Enrollment:
        """Whether the device's key is enrolled, as which device (``cofferd.field.enrollment``)."""
        ...

    def enrolled(self) -> None:
        """The device just enrolled: its identity replaces a boot credential's login."""
        ...
