"""What the methods may use of the daemon: a typed view, defined here, below the wiring.

:class:`cofferd.app.App` satisfies :class:`Services`; methods see only this
Protocol through ``call.services``, so ``rpc/`` never imports the app that
builds it (no cycle), and a test can hand in any object of this shape.
"""

from __future__ import annotations

from typing import Any, Protocol

from cofferd.models import UnlockState
from cofferd.notify import Notifier
from cofferd.resources.cache import BigPartCache
from cofferd.resources.upstream import ApiClient
from cofferd.settings import Settings


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
    def cache(self) -> BigPartCache: ...

    @property
    def unlock(self) -> UnlockService: ...

    def api_client(self) -> ApiClient:
        """The process's one upstream API client (built on first use)."""
        ...
