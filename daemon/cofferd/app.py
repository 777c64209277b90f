"""Wiring: settings in, the daemon's services and method table out.

:class:`App` is what every method reaches through ``call.app``: the settings,
the API client provider, the big-part cache, the notifier and the place for
feature objects such as the unlock workflow. Nothing here reads the
environment; ``main()`` builds the settings and the notifier and passes them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cofferd.models import UnlockState
from cofferd.notify import Notifier
from cofferd.resources.cache import BigPartCache
from cofferd.resources.provider import get_api_client
from cofferd.resources.upstream import ApiClient
from cofferd.rpc import unlock as rpc_unlock
from cofferd.rpc.dispatch import Dispatcher
from cofferd.rpc.methods import METHODS
from cofferd.settings import Settings
from cofferd.unlock import UnlockWorkflow


class UnlockView(Protocol):
    """What ``status`` needs from the unlock workflow."""

    @property
    def state(self) -> UnlockState: ...

    def close(self, timeout: float) -> None: ...


@dataclass
class App:
    """The daemon's services, shared by every call."""

    settings: Settings
    notifier: Notifier
    #: The process's one API client, built on first use.
    api_client: Callable[[], ApiClient]
    cache: BigPartCache
    #: The unlock workflow, once its feature is wired in (``unlock``/``unlock_status``).
    unlock: UnlockView | None = None

    def unlock_state(self) -> UnlockState:
        return UnlockState.IDLE if self.unlock is None else self.unlock.state


def build_app(settings: Settings, notifier: Notifier) -> App:
    return App(
        settings=settings,
        notifier=notifier,
        api_client=functools.partial(get_api_client, settings),
        cache=BigPartCache(settings.cache_dir),
        unlock=UnlockWorkflow.from_settings(
            settings, functools.partial(get_api_client, settings), notifier
        ),
    )


def build_dispatcher(app: App) -> Dispatcher:
    """The method table: the core methods, then each feature's own."""
    dispatcher = Dispatcher(METHODS)
    rpc_unlock.register(dispatcher)
    return dispatcher
